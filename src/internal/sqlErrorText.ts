/** The message of a database error as PostgreSQL gave it (message, detail, hint), for logs and error texts. */
export const sqlErrorText = (error: unknown): string => {
  const cause = (error as { cause?: unknown } | null)?.cause ?? error
  if (cause instanceof Error) {
    const pg = cause as Error & { detail?: string; hint?: string }
    return [pg.message, pg.detail, pg.hint ? `hint: ${pg.hint}` : undefined].filter(Boolean).join("; ")
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
