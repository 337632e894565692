/**
 * Whether a failure means the database connection was lost, rather than the
 * handler's own work failing: a server restart or shutdown, a terminated
 * backend, no free connection slot, a broken socket. Such an attempt is
 * released without counting it (an outage must not use up a job's attempts).
 */
import { Cause, Option } from "effect"

// SQLSTATE: class 08 (connection exception), 57P01-03 (admin/crash shutdown, cannot connect now), 53300 (too many connections).
const CONNECTION_STATES = /^(08...|57P0[123]|53300)$/
const CONNECTION_CODES = new Set(["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "ENOTCONN", "EHOSTUNREACH"])
const CONNECTION_MESSAGES = /Connection terminated|Failed to acquire connection|Client has encountered a connection error|timeout exceeded when trying to connect|Connection timed out/i

// Anywhere in the error's cause chain: a connection SQLSTATE, a socket error code, or pg's words for a lost connection.
const mentionsConnectionLoss = (error: unknown, depth = 0): boolean => {
  if (typeof error !== "object" || error === null || depth > 5) return false
  const { code, message, cause } = error as { code?: unknown; message?: unknown; cause?: unknown }
  if (typeof code === "string" && (CONNECTION_STATES.test(code) || CONNECTION_CODES.has(code))) return true
  if (typeof message === "string" && CONNECTION_MESSAGES.test(message)) return true
  if (error instanceof AggregateError && error.errors.some((inner) => mentionsConnectionLoss(inner, depth + 1))) return true
  return mentionsConnectionLoss(cause, depth + 1)
}

// Only a database error counts: a handler's own "connection timed out" talking to some API is its business.
export const isConnectionError = (error: unknown): boolean =>
  typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "SqlError" && mentionsConnectionLoss(error)

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
