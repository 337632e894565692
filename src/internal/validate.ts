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
  // Counted in characters, as PostgreSQL's length() in the column's check does (.length counts UTF-16 units).
  const key = options.idempotencyKey
  const keyLength = typeof key === "string" ? [...key].length : 0
  if (key !== undefined && !(typeof key === "string" && keyLength >= 1 && keyLength <= 255)) {
    const got = typeof key === "string" ? `${keyLength} characters` : key === null ? "null" : typeof key
    return `idempotencyKey must be a string of 1 to 255 characters, got ${got}`
  }
  if (typeof options.idempotencyKey === "string") {
    const problem = textProblem(options.idempotencyKey)
    if (problem !== undefined) return `idempotencyKey ${problem}`
  }
  return undefined
}

// An unpaired half of a UTF-16 surrogate pair: not a character, and jsonb refuses its escape.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

/** Why PostgreSQL could not store a text as it is, or undefined. */
export const textProblem = (text: string): string | undefined =>
  text.includes("\u0000")
    ? "contains a NUL character (\\u0000), which PostgreSQL cannot store"
    : LONE_SURROGATE.test(text)
    ? "contains an unpaired UTF-16 surrogate, which is not Unicode text"
    : undefined

// Deeper payloads are refused: JSON.stringify (about 4,000 levels here) and PostgreSQL's parser (its stack
// depth limit) give up on deep nesting with errors that do not say where.
export const MAX_PAYLOAD_DEPTH = 2_000

/** A value met while walking a payload, and how it was reached (the path is built only for a problem). */
interface Step {
  readonly value: unknown
  readonly parent: Step | undefined
  readonly key: string | number | undefined
  readonly depth: number
}

const pathOf = (step: Step): string => {
  const parts: Array<string> = []
  for (let at: Step | undefined = step; at?.key !== undefined; at = at.parent) {
    parts.push(typeof at.key === "number" ? `[${at.key}]` : `[${JSON.stringify(at.key)}]`)
  }
  parts.reverse()
  // A path thousands of levels deep would crowd out what is wrong with it.
  if (parts.length > MAX_PATH_PARTS) return `payload${parts.slice(0, MAX_PATH_PARTS).join("")}…(${parts.length - MAX_PATH_PARTS} levels more)`
  return `payload${parts.join("")}`
}
const MAX_PATH_PARTS = 20

/** What is wrong with this one value itself (not its children), or undefined. */
const valueProblem = (step: Step): string | undefined => {
  const { value } = step
  switch (typeof value) {
    case "string": {
      const problem = textProblem(value)
      return problem === undefined ? undefined : `${pathOf(step)} ${problem}`
    }
    case "number":
      return Number.isFinite(value) ? undefined : `${pathOf(step)} is ${value}, which JSON cannot carry (it would be stored as null)`
    case "boolean":
      return undefined
    case "bigint":
      return `${pathOf(step)} is a bigint, which JSON cannot carry (send it as a string)`
    case "object": {
      if (value === null) return undefined
      if (step.depth > MAX_PAYLOAD_DEPTH) return `${pathOf(step.parent!)} nests deeper than ${MAX_PAYLOAD_DEPTH} levels`
      if (Array.isArray(value)) return undefined
      const prototype = Object.getPrototypeOf(value)
      if (prototype === Object.prototype || prototype === null) return undefined
      const kind = (value as { constructor?: { name?: string } }).constructor?.name || "object of a class"
      return `${pathOf(step)} is a ${kind}, not plain JSON (it would be stored as ${JSON.stringify(value) ?? "nothing"}); encode it, or give the job type a Schema that does`
    }
    case "undefined":
      // Only met in arrays and at the top: a property whose value is undefined is left out, as JSON does.
      return `${pathOf(step)} is undefined (it would be stored as null)`
    default:
      // a function, a symbol
      return `${pathOf(step)} is a ${typeof value}, which JSON cannot carry`
  }
}

/**
 * Why a payload would not reach jsonb as it is, naming where (`payload["lines"][3]`), or undefined.
 * JSON.stringify would turn NaN and Infinity into null, a Map into {}, a Date into a string, and drop
 * functions; a bigint or a cycle would throw. (A property whose value is undefined is left out, as JSON
 * does: absent and undefined read the same.) Walked with a stack of its own, not by recursion: a deep
 * payload must not overflow the call stack.
 */
export const jsonProblem = (payload: unknown): string | undefined => {
  const pending: Array<Step> = [{ value: payload, parent: undefined, key: undefined, depth: 0 }]
  // The objects from the top down to the step's parent (ancestors[d] at depth d), to tell a cycle, which would
  // otherwise read as nesting too deep, from an object that is only used twice (JSON writes that out twice).
  const ancestors: Array<Step> = []
  const onPath = new Set<unknown>()
  while (pending.length > 0) {
    const step = pending.pop()!
    // Depth first: the steps deeper than this one's parent have all been walked.
    while (ancestors.length > step.depth) onPath.delete(ancestors.pop()!.value)
    if (onPath.has(step.value)) {
      const again = ancestors.find((ancestor) => ancestor.value === step.value)!
      return `${pathOf(step)} refers back to ${pathOf(again)} (a cycle), which JSON cannot carry`
    }
    const problem = valueProblem(step)
    if (problem !== undefined) return problem
    const { value } = step
    if (typeof value !== "object" || value === null) continue
    ancestors.push(step)
    onPath.add(value)
    const depth = step.depth + 1
    // Pushed last to first, so that the first problem in the payload's own order is the one named.
    if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) pending.push({ value: value[i], parent: step, key: i, depth })
      continue
    }
    const entries = Object.entries(value)
    for (const [key, field] of entries) {
      const keyProblem = textProblem(key)
      if (keyProblem !== undefined) return `the key of ${pathOf({ value: field, parent: step, key, depth })} ${keyProblem}`
    }
    for (let i = entries.length - 1; i >= 0; i--) {
      const [key, field] = entries[i]!
      if (field !== undefined) pending.push({ value: field, parent: step, key, depth })
    }
  }
  return undefined
}

/**
 * A time as timestamptz text. toISOString writes the years before 1 and after 9999 as "-000100-…" and
 * "+010000-…", which PostgreSQL does not read; it reads "0101-…Z BC" and "10000-…Z".
 */
export const timestamptzText = (date: Date): string => {
  const year = date.getUTCFullYear()
  if (year >= 1 && year <= 9999) return date.toISOString()
  const time = date.toISOString().slice(date.toISOString().indexOf("-", 1))
  return year < 1 ? `${String(1 - year).padStart(4, "0")}${time} BC` : `${year}${time}`
}

/** A JSON object (not null, not an array): the only payload shape the queue stores. */
export const isJsonObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)
