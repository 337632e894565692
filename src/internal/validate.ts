/** Checks of enqueue options, so bad input fails with a message instead of a database error. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

export const isUuid = (value: unknown): value is string => typeof value === "string" && UUID.test(value)

export const MAX_ATTEMPTS_LIMIT = 100
/** 4713-11-24 BC 00:00 UTC, the earliest timestamptz (the latest, 294276 AD, lies beyond any JavaScript Date). */
const EARLIEST_TIMESTAMP = Date.UTC(-4713, 10, 24)
export const PRIORITY_RANGE = [-32768, 32767] as const

/** Returns the reason the options are invalid, or undefined when they are fine. */
export const invalidOptionsReason = (options: {
  readonly organizationId: unknown
  readonly createdBy?: unknown
  readonly maxAttempts?: unknown
  readonly priority?: unknown
  readonly runAt?: unknown
  readonly idempotencyKey?: unknown
}): string | undefined => {
  if (!isUuid(options.organizationId)) {
    return `organizationId must be a UUID, got ${JSON.stringify(options.organizationId)}`
  }
  if (options.createdBy !== undefined && options.createdBy !== null && !isUuid(options.createdBy)) {
    return `createdBy must be a UUID or null, got ${JSON.stringify(options.createdBy)}`
  }
  if (
    options.maxAttempts !== undefined &&
    !(Number.isInteger(options.maxAttempts) && (options.maxAttempts as number) >= 1 && (options.maxAttempts as number) <= MAX_ATTEMPTS_LIMIT)
  ) {
    return `maxAttempts must be a whole number from 1 to ${MAX_ATTEMPTS_LIMIT}, got ${String(options.maxAttempts)}`
  }
  if (
    options.priority !== undefined &&
    !(Number.isInteger(options.priority) && (options.priority as number) >= PRIORITY_RANGE[0] && (options.priority as number) <= PRIORITY_RANGE[1])
  ) {
    return `priority must be a whole number from ${PRIORITY_RANGE[0]} to ${PRIORITY_RANGE[1]}, got ${String(options.priority)}`
  }
  if (options.runAt !== undefined && !(options.runAt instanceof Date && !Number.isNaN(options.runAt.getTime()))) {
    return `runAt must be a valid Date, got ${String(options.runAt)}`
  }
  if (options.runAt instanceof Date && options.runAt.getTime() < EARLIEST_TIMESTAMP) {
    // JavaScript dates reach further back than PostgreSQL's timestamptz.
    return `runAt must be between 4713 BC and 294276 AD (what PostgreSQL stores), got ${options.runAt.toISOString()}`
  }
  if (
    options.idempotencyKey !== undefined &&
    !(typeof options.idempotencyKey === "string" && options.idempotencyKey.length >= 1 && options.idempotencyKey.length <= 255)
  ) {
    return `idempotencyKey must be a string of 1 to 255 characters`
  }
  return undefined
}

/** A JSON object (not null, not an array): the only payload shape the queue stores. */
export const isJsonObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)
