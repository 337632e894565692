/**
 * Finding enqueued jobs by id, type, organization, status and partial payload,
 * and saying why a job does not match: the assertions' failure messages list
 * what was enqueued instead, closest first, each with its differences.
 */
import { Data, Equal, Schema } from "effect"
import type { JobDefinition } from "../JobDefinition.js"
import type { JobRecord, JobStatus } from "./JobRecords.js"

/** Every field optional, all the way down; arrays and Dates are compared whole. */
export type DeepPartial<A> = A extends ReadonlyArray<any> | Date | ((...args: ReadonlyArray<any>) => any)
  ? A
  : A extends object
    ? { readonly [K in keyof A]?: DeepPartial<A[K]> }
    : A

/** Which jobs to look for; every field given must match. */
export interface JobFilter<A = any> {
  /** One job, as enqueue returned it (e.g. to ask whether that job completed). */
  readonly id?: string
  /** A job type's name, or its definition: then `payload` is compared with the decoded payload. */
  readonly jobType?: string | JobDefinition<string, A, any>
  readonly organizationId?: string
  /**
   * The fields the payload must have: nested objects match partially, arrays
   * element by element and whole, Dates by time, other values by equality.
   */
  readonly payload?: DeepPartial<NoInfer<A>>
  /** Default: any status (a job that already ran was still enqueued). */
  readonly status?: JobStatus | ReadonlyArray<JobStatus>
}

/** An assertion about enqueued jobs failed; the message shows what was enqueued instead. */
export class EnqueuedAssertionError extends Data.TaggedError("EnqueuedAssertionError")<{
  readonly message: string
  /** The jobs in the queue when the assertion ran. */
  readonly jobs: ReadonlyArray<JobRecord>
}> {}

const typeName = (filter: JobFilter) =>
  filter.jobType === undefined ? undefined : typeof filter.jobType === "string" ? filter.jobType : filter.jobType.jobType

const statuses = (filter: JobFilter): ReadonlyArray<JobStatus> | undefined =>
  filter.status === undefined ? undefined : typeof filter.status === "string" ? [filter.status] : filter.status

/** The payload the filter's `payload` is compared with: decoded when the filter names a definition. */
const comparablePayload = (filter: JobFilter, job: JobRecord): { readonly value: unknown; readonly note?: string } => {
  if (filter.jobType === undefined || typeof filter.jobType === "string") return { value: job.payload }
  const decoded = Schema.decodeUnknownEither(filter.jobType.payload)(job.payload)
  return decoded._tag === "Right" ? { value: decoded.right } : { value: job.payload, note: "its payload does not decode with the definition's Schema" }
}

/** Why the job does not match the filter: one line per difference, none when it matches. */
export const differences = (filter: JobFilter, job: JobRecord): ReadonlyArray<string> => {
  const found: Array<string> = []
  const type = typeName(filter)
  // UUIDs in any case, as the queue takes them (it stores them in lower case, as PostgreSQL writes them).
  if (filter.id !== undefined && job.id !== filter.id.toLowerCase()) found.push(`id: expected ${show(filter.id)}, got ${show(job.id)}`)
  if (type !== undefined && job.jobType !== type) found.push(`jobType: expected ${show(type)}, got ${show(job.jobType)}`)
  if (filter.organizationId !== undefined && job.organizationId !== filter.organizationId.toLowerCase()) {
    found.push(`organizationId: expected ${show(filter.organizationId)}, got ${show(job.organizationId)}`)
  }
  const wanted = statuses(filter)
  if (wanted !== undefined && !wanted.includes(job.status)) {
    found.push(`status: expected ${wanted.join(" or ")}, got ${job.status}`)
  }
  if (filter.payload !== undefined && (type === undefined || job.jobType === type)) {
    const { value, note } = comparablePayload(filter, job)
    const payloadDifferences = compare(filter.payload, value, "payload")
    if (payloadDifferences.length > 0 && note !== undefined) found.push(`payload: ${note}`)
    found.push(...payloadDifferences)
  }
  return found
}

export const matches = (filter: JobFilter, job: JobRecord): boolean => differences(filter, job).length === 0

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Date) &&
  (Object.getPrototypeOf(value) === Object.prototype || Object.getPrototypeOf(value) === null)

// What a plain object in a filter may match: any object with fields, a decoded Schema.Class instance too.
const hasFields = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Date)

/** Compares `expected` (partial) with `actual`; returns one line per difference, prefixed by its path. */
export const compare = (expected: unknown, actual: unknown, path: string): ReadonlyArray<string> => {
  if (isPlainObject(expected)) {
    if (!hasFields(actual)) return [`${path}: expected an object like ${show(expected)}, got ${show(actual)}`]
    return Object.entries(expected).flatMap(([key, value]) =>
      value === undefined || key in actual
        ? compare(value, actual[key], `${path}.${key}`)
        : [`${path}.${key}: missing (expected ${show(value)})`]
    )
  }
  if (Array.isArray(expected)) {
    if (!Array.isArray(actual)) return [`${path}: expected an array, got ${show(actual)}`]
    if (actual.length !== expected.length) {
      return [`${path}: expected ${expected.length} element(s), got ${actual.length}: ${show(actual)}`]
    }
    return expected.flatMap((value, index) => compare(value, actual[index], `${path}[${index}]`))
  }
  if (expected instanceof Date) {
    const time = actual instanceof Date ? actual.getTime() : typeof actual === "string" ? Date.parse(actual) : Number.NaN
    return time === expected.getTime() ? [] : [`${path}: expected ${show(expected)}, got ${show(actual)}`]
  }
  if (Object.is(expected, actual) || Equal.equals(expected, actual)) return []
  return [`${path}: expected ${show(expected)}, got ${show(actual)}`]
}

/** A compact, JSON-like rendering for messages (Dates as ISO strings, long values cut). */
export const show = (value: unknown, max = 160): string => {
  let text: string
  try {
    text = JSON.stringify(value, (_key, v) => (typeof v === "bigint" ? `${v}n` : v === undefined ? "undefined" : v)) ?? String(value)
  } catch {
    text = String(value)
  }
  return text.length > max ? `${text.slice(0, max - 1)}…` : text
}

export const describeFilter = (filter: JobFilter): string => {
  const parts: Array<string> = []
  const type = typeName(filter)
  if (filter.id !== undefined) parts.push(`id ${show(filter.id)}`)
  if (type !== undefined) parts.push(`jobType ${show(type)}`)
  if (filter.organizationId !== undefined) parts.push(`organizationId ${show(filter.organizationId)}`)
  const wanted = statuses(filter)
  if (wanted !== undefined) parts.push(`status ${wanted.join(" or ")}`)
  if (filter.payload !== undefined) parts.push(`payload containing ${show(filter.payload)}`)
  return parts.length === 0 ? "any job" : parts.join(", ")
}

const describeJob = (job: JobRecord) =>
  `${job.jobType} ${job.id} for organization ${job.organizationId}, ${job.status}, payload ${show(job.payload)}`

const MAX_LISTED = 20

/** The jobs, closest to the filter first, each with the lines that differ. */
const listClosest = (filter: JobFilter, jobs: ReadonlyArray<JobRecord>): string => {
  // The job with the id asked for is the closest, whatever else differs.
  const otherId = (job: JobRecord) => (filter.id !== undefined && job.id !== filter.id ? 1 : 0)
  const ranked = jobs
    .map((job, index) => ({ job, index, why: differences(filter, job) }))
    .sort((a, b) => otherId(a.job) - otherId(b.job) || a.why.length - b.why.length || a.index - b.index)
  const lines = ranked.slice(0, MAX_LISTED).flatMap(({ job, why }) => [`  - ${describeJob(job)}`, ...why.map((line) => `      ${line}`)])
  if (ranked.length > MAX_LISTED) lines.push(`  … and ${ranked.length - MAX_LISTED} more`)
  return lines.join("\n")
}

const listJobs = (jobs: ReadonlyArray<JobRecord>): string => {
  const lines = jobs.slice(0, MAX_LISTED).map((job) => `  - ${describeJob(job)}`)
  if (jobs.length > MAX_LISTED) lines.push(`  … and ${jobs.length - MAX_LISTED} more`)
  return lines.join("\n")
}

/** The message when no job (or not `count` jobs) matched. */
export const notEnqueuedMessage = (filter: JobFilter, jobs: ReadonlyArray<JobRecord>, count?: number): string => {
  const matching = jobs.filter((job) => matches(filter, job))
  const others = jobs.filter((job) => !matches(filter, job))
  const head = count === undefined
    ? `assertEnqueued: expected a job with ${describeFilter(filter)}, but none was enqueued.`
    : `assertEnqueued: expected ${count} job(s) with ${describeFilter(filter)}, but ${matching.length} matched.`
  if (jobs.length === 0) return `${head}\nNo job was enqueued at all.`
  const parts = [head]
  if (count !== undefined && matching.length > 0) parts.push(`Matching (${matching.length}):\n${listJobs(matching)}`)
  if (others.length > 0) {
    parts.push(`${count !== undefined && matching.length > 0 ? "Not matching" : "Enqueued instead"} (${others.length}, closest first):\n${listClosest(filter, others)}`)
  }
  return parts.join("\n")
}

/** The message when jobs matched that should not have. */
export const enqueuedMessage = (filter: JobFilter, matching: ReadonlyArray<JobRecord>): string =>
  `assertNotEnqueued: expected no job with ${describeFilter(filter)}, but ${matching.length} matched:\n${listJobs(matching)}`
