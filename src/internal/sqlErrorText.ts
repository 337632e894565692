/**
 * The message of a database error as PostgreSQL gave it (message, detail, hint), for logs and error
 * texts. An integrity violation's detail quotes the row's values ("Failing row contains (…)", "Key
 * (iban)=(DE…) already exists"): those can be personal data (an IBAN, a name) and would be copied
 * into job_queue.error, job_runs and audit_logs, so for SQLSTATE class 23 only the constraint is named.
 */
export const sqlErrorText = (error: unknown): string => {
  const cause = (error as { cause?: unknown } | null)?.cause ?? error
  if (cause instanceof Error) {
    const pg = cause as Error & { code?: unknown; detail?: string; hint?: string; constraint?: string }
    const integrityViolation = typeof pg.code === "string" && pg.code.startsWith("23")
    const detail = integrityViolation
      ? pg.constraint !== undefined && !pg.message.includes(`"${pg.constraint}"`) ? `constraint ${pg.constraint}` : undefined
      : pg.detail
    return [pg.message, detail, pg.hint ? `hint: ${pg.hint}` : undefined].filter(Boolean).join("; ")
  }
  if (error instanceof Error) return error.message
  return String(error)
}

/** The SQLSTATE code of a database error, if it has one. */
export const sqlErrorCode = (error: unknown): string | undefined => {
  const cause = (error as { cause?: { code?: unknown } } | null)?.cause
  return typeof cause?.code === "string" ? cause.code : undefined
}

/** SQLSTATE of a lock wait given up (lock_timeout). */
export const LOCK_NOT_AVAILABLE = "55P03"
/** SQLSTATE of a statement cancelled: past its statement_timeout, or by pg_cancel_backend. */
export const QUERY_CANCELED = "57014"
