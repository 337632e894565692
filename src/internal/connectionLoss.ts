/**
 * Whether a failure means the database connection was lost, rather than the
 * handler's own work failing: a server restart or shutdown, a terminated
 * backend, no free connection slot, a broken socket. Such an attempt is
 * released without counting it (an outage must not use up a job's attempts).
 */
import { Cause, Option } from "effect"

// SQLSTATE: class 08 (connection exception), 57P01-03 (admin/crash shutdown, cannot connect now), 53300 (too many connections).
// Not 08P01 (protocol violation): a live server's answer to a statement built wrong (more than 65,535
// parameters), which is the handler's failure, not an outage to wait out uncounted.
const CONNECTION_STATES = /^(08(?!P01)...|57P0[123]|53300)$/
const CONNECTION_CODES = new Set(["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "ENOTCONN", "EHOSTUNREACH"])
const CONNECTION_MESSAGES = /Connection terminated|Failed to acquire connection|Client has encountered a connection error|timeout exceeded when trying to connect|Connection timed out/i

// pg-pool's words once `end` was called on it: the program closed the pool, and it never comes back.
const POOL_ENDED = /Cannot use a pool after calling end on the pool/

// Whether the error, or one anywhere in its cause chain, says so.
const inChain = (says: (code: unknown, message: unknown) => boolean) => {
  const search = (error: unknown, depth: number): boolean => {
    if (typeof error !== "object" || error === null || depth > 5) return false
    const { code, message, cause } = error as { code?: unknown; message?: unknown; cause?: unknown }
    if (says(code, message)) return true
    if (error instanceof AggregateError && error.errors.some((inner) => search(inner, depth + 1))) return true
    return search(cause, depth + 1)
  }
  return (error: unknown) => search(error, 0)
}

// A connection SQLSTATE, a socket error code, or pg's words for a lost connection.
const mentionsConnectionLoss = inChain((code, message) =>
  (typeof code === "string" && (CONNECTION_STATES.test(code) || CONNECTION_CODES.has(code))) ||
  (typeof message === "string" && CONNECTION_MESSAGES.test(message))
)
const mentionsPoolEnded = inChain((_, message) => typeof message === "string" && POOL_ENDED.test(message))

// Only a database error counts: a handler's own "connection timed out" talking to some API is its business.
// Not one from a pool that was ended ("Failed to acquire connection" around it): waiting cannot help, and
// under a TestClock that nothing moves any more (a test's layer closing) the retry would wait for ever.
export const isConnectionError = (error: unknown): boolean =>
  typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "SqlError" &&
  mentionsConnectionLoss(error) && !mentionsPoolEnded(error)

/** True when the attempt failed only because the database connection was lost. */
export const lostConnection = (cause: Cause.Cause<unknown>): boolean => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) return isConnectionError(failure.value)
  const defect = Cause.dieOption(cause)
  return Option.isSome(defect) && isConnectionError(defect.value)
}

// SQLSTATE: class 40 (serialization failure, deadlock), 55P03 (lock wait past lock_timeout), 57014 (statement timeout).
const PASSING_STATES = /^(40...|55P03|57014)$/

/**
 * Whether a database error may pass if the statement is sent again: a lost connection, a conflict with
 * another transaction, a wait cut off. Not one the statement itself causes (a value the database refuses).
 */
export const isTransient = (error: unknown): boolean => {
  if (isConnectionError(error)) return true
  const code = (error as { cause?: { code?: unknown } } | null)?.cause?.code
  return typeof code === "string" && PASSING_STATES.test(code)
}
