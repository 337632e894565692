// The queue's tables as one snapshot, and the rules of docs/ARCHITECTURE.md's state machine that any two
// snapshots around one step must keep, whatever the step was: which arrows exist and which audit entries
// each writes, how attempts move, what a job of each status holds, that job_runs agrees with job_queue,
// and that a committed run stays committed. No reference model is needed for these.
import type pg from "pg"
import { BACKOFF } from "./queueModel.js"

export interface JobRow {
  readonly id: string
  readonly status: string
  readonly attempts: number
  readonly maxAttempts: number
  readonly priority: number
  readonly lockedBy: string | null
  readonly lockedAt: number | null
  readonly leaseExpiresAt: number | null
  readonly runAt: number
  readonly createdAt: number
  readonly completedAt: number | null
  readonly error: string | null
  readonly org: string
  readonly key: string | null
  readonly type: string
  readonly traceId: string
}

export interface RunRow {
  readonly jobId: string
  readonly status: string
  readonly idempotency: string
  readonly attempts: number
  readonly worker: string | null
  readonly key: string
  readonly traceId: string
  readonly lastError: string | null
  readonly startedAt: number | null
  readonly finishedAt: number | null
}

export interface WorkerRow {
  readonly workerId: string
  readonly host: string
  readonly pid: number
  readonly startedAt: number
  readonly lastHeartbeat: number
  readonly jobsInHand: ReadonlyArray<string>
  readonly until: number | null
}

export interface AuditRow {
  readonly id: number
  readonly jobId: string | null
  readonly event: string
  readonly actor: string
  readonly org: string | null
  readonly traceId: string | null
  readonly details: Readonly<Record<string, unknown>>
}

export interface Snapshot {
  readonly jobs: ReadonlyMap<string, JobRow>
  readonly runs: ReadonlyMap<string, RunRow>
  readonly workers: ReadonlyMap<string, WorkerRow>
  /** The audit entries after the id asked for, in order. */
  readonly audit: ReadonlyArray<AuditRow>
}

export const emptySnapshot: Snapshot = { jobs: new Map(), runs: new Map(), workers: new Map(), audit: [] }

/** A timestamp column in microseconds since the epoch (bigint, sent as text). */
export const micros = (column: string) => `(extract(epoch FROM ${column}) * 1000000)::bigint`

const fromMicros = (value: string | null) => (value === null ? null : Number(value))

/** Every row of job_queue, job_runs and job_workers, and the audit entries after `auditAfter`: one round trip. */
export const readSnapshot = async (client: pg.Client, auditAfter: number): Promise<Snapshot> => {
  const [jobs, runs, workers, audit] = (await client.query(`
    SELECT id::text, status, attempts, max_attempts AS "maxAttempts", priority, locked_by AS "lockedBy",
           ${micros("locked_at")} AS "lockedAt", ${micros("lease_expires_at")} AS "leaseExpiresAt", ${micros("run_at")} AS "runAt",
           ${micros("created_at")} AS "createdAt", ${micros("completed_at")} AS "completedAt", error,
           organization_id::text AS org, idempotency_key AS key, job_type AS type, trace_id AS "traceId"
    FROM job_queue;
    SELECT job_id::text AS "jobId", status, idempotency_status AS idempotency, attempts, worker_id AS worker, idempotency_key AS key,
           trace_id AS "traceId", last_error AS "lastError", ${micros("started_at")} AS "startedAt", ${micros("finished_at")} AS "finishedAt"
    FROM job_runs;
    SELECT worker_id AS "workerId", host, pid, ${micros("started_at")} AS "startedAt", ${micros("last_heartbeat_at")} AS "lastHeartbeat",
           jobs_in_hand::text[] AS "jobsInHand", ${micros("jobs_in_hand_until")} AS until
    FROM job_workers;
    SELECT id::text, job_id::text AS "jobId", event, actor, organization_id::text AS org, trace_id AS "traceId", details FROM audit_logs a WHERE a.id > ${Math.trunc(auditAfter)} ORDER BY a.id
  `)) as unknown as ReadonlyArray<pg.QueryResult>
  return {
    jobs: new Map(
      jobs!.rows.map((row) => [
        row.id,
        {
          ...row,
          lockedAt: fromMicros(row.lockedAt),
          leaseExpiresAt: fromMicros(row.leaseExpiresAt),
          runAt: Number(row.runAt),
          createdAt: Number(row.createdAt),
          completedAt: fromMicros(row.completedAt)
        } as JobRow
      ])
    ),
    runs: new Map(runs!.rows.map((row) => [row.jobId, { ...row, startedAt: fromMicros(row.startedAt), finishedAt: fromMicros(row.finishedAt) } as RunRow])),
    workers: new Map(
      workers!.rows.map((row) => [
        row.workerId,
        { ...row, startedAt: Number(row.startedAt), lastHeartbeat: Number(row.lastHeartbeat), until: fromMicros(row.until) } as WorkerRow
      ])
    ),
    audit: audit!.rows.map((row) => ({ ...row, id: Number(row.id) }) as AuditRow)
  }
}

// The arrows of docs/ARCHITECTURE.md's diagram, each with the audit entries it may write (sorted, joined
// by spaces). "new" is a job that did not exist, "gone" one retention deleted.
const ARROWS: Readonly<Record<string, ReadonlyArray<string>>> = {
  "new>pending": [""],
  "new>processing": ["job_started"], // an enqueue handed off to a worker (enqueue_and_claim)
  "pending>processing": ["job_started"],
  "processing>completed": ["job_completed", "job_completed job_rescued"],
  "processing>pending": ["job_retry_scheduled", "job_released", "job_rescued"],
  "processing>failed": ["job_failed", "job_failed_manually", "job_failed job_rescued"],
  "pending>failed": ["job_failed_manually", "job_cancelled"],
  "failed>pending": ["job_requeued"],
  "completed>gone": [""],
  "failed>gone": [""]
}

// The attempt counter across an arrow: a claim counts one, a release gives it back, a requeue starts afresh.
const attemptsAfter = (before: JobRow | undefined, events: string, after: JobRow): number | undefined => {
  if (before === undefined) return after.status === "processing" ? 1 : 0
  if (events === "job_started") return before.attempts + 1
  if (events === "job_released") return before.attempts - 1
  if (events === "job_requeued") return 0
  return before.attempts
}

const RUN_STATUS: Readonly<Record<string, ReadonlyArray<string>>> = {
  pending: ["retry_scheduled", "released", "rescued"],
  processing: ["running"],
  completed: ["completed"],
  failed: ["failed"]
}

const IDEMPOTENCY: Readonly<Record<string, ReadonlyArray<string>>> = {
  pending: ["in_progress", "completed"],
  processing: ["in_progress", "completed"],
  completed: ["completed"],
  failed: ["failed"]
}

export interface StepContext {
  /** The step's time (p_now), in microseconds. */
  readonly now: number
  /** Jobs with a job_started entry so far, this step's included. */
  readonly started: ReadonlySet<string>
}

/** The rules one step broke, as sentences; empty when it kept them all. */
export const brokenRules = (before: Snapshot, after: Snapshot, context: StepContext): ReadonlyArray<string> => {
  const broken: Array<string> = []
  const eventsOf = new Map<string, Array<string>>()
  for (const entry of after.audit) {
    if (entry.jobId !== null) eventsOf.set(entry.jobId, [...(eventsOf.get(entry.jobId) ?? []), entry.event])
  }
  for (const entry of after.audit) {
    const job = entry.jobId === null ? undefined : (after.jobs.get(entry.jobId) ?? before.jobs.get(entry.jobId))
    if (job !== undefined && (entry.org !== job.org || entry.traceId !== job.traceId)) {
      broken.push(`${entry.event} of job ${job.id} names organization ${entry.org} and trace ${entry.traceId}, not the job's`)
    }
  }
  const ids = new Set([...before.jobs.keys(), ...after.jobs.keys(), ...eventsOf.keys()])
  for (const id of ids) {
    const was = before.jobs.get(id)
    const is = after.jobs.get(id)
    const events = [...(eventsOf.get(id) ?? [])].sort().join(" ")
    const from = was?.status ?? "new"
    const to = is?.status ?? "gone"
    if (from === to) {
      if (events !== "") broken.push(`job ${id} stayed ${to} but the audit log got "${events}"`)
      if (was !== undefined && is !== undefined && (was.attempts !== is.attempts || was.lockedBy !== is.lockedBy)) {
        broken.push(`job ${id} stayed ${to} but its attempts or holder changed (${was.attempts}/${was.lockedBy} → ${is.attempts}/${is.lockedBy})`)
      }
    } else if (!(ARROWS[`${from}>${to}`] ?? []).includes(events)) {
      broken.push(`job ${id} went ${from} → ${to} with audit entries "${events}": not an arrow of the state machine`)
    } else if (is !== undefined && is.attempts !== attemptsAfter(was, events, is)) {
      broken.push(`job ${id} went ${from} → ${to} ("${events}") with attempts ${was?.attempts ?? "-"} → ${is.attempts}`)
    }
    if (events === "job_retry_scheduled" && is !== undefined && is.runAt !== context.now + BACKOFF * is.attempts * is.attempts) {
      broken.push(`job ${id}: retry of attempt ${is.attempts} at ${is.runAt}, not now + 30 s × ${is.attempts}²`)
    }
    const ranBefore = before.runs.get(id)
    const runAfter = after.runs.get(id)
    if (ranBefore?.idempotency === "completed" && (runAfter?.idempotency !== "completed" || is?.status === "failed")) {
      broken.push(`job ${id}: its run had committed, and now the run is ${runAfter?.idempotency} and the job ${to}`)
    }
  }
  for (const job of after.jobs.values()) broken.push(...brokenRowRules(job, after.runs.get(job.id), context))
  for (const run of after.runs.values()) {
    if (!context.started.has(run.jobId)) broken.push(`job ${run.jobId} has a job_runs row but was never started`)
  }
  return broken
}

// What one job's row and its run must hold, whatever happened before.
const brokenRowRules = (job: JobRow, run: RunRow | undefined, context: StepContext): ReadonlyArray<string> => {
  const broken: Array<string> = []
  const says = (rule: string) => broken.push(`job ${job.id} (${job.status}, attempt ${job.attempts}/${job.maxAttempts}): ${rule}`)
  if (!["pending", "processing", "completed", "failed"].includes(job.status)) says("not one of the four statuses")
  const leased = [job.lockedBy, job.lockedAt, job.leaseExpiresAt].map((value) => value !== null)
  if (job.status === "processing" && leased.includes(false)) says("processing without locked_by, locked_at and lease_expires_at")
  if (job.status !== "processing" && leased.includes(true)) says("not processing, yet it has a holder or a lease")
  if (job.attempts > job.maxAttempts) says("more attempts than max_attempts")
  if (job.status === "completed" && job.error !== null) says(`completed with an error: ${job.error}`)
  if (job.status === "failed" && job.error === null) says("failed without an error")
  if ((job.status === "completed" || job.status === "failed") !== (job.completedAt !== null)) says("completed_at set while it is not finished, or missing once it is")
  if (context.started.has(job.id) !== (run !== undefined)) says(`job_runs row ${run === undefined ? "missing for a started job" : "for a job never started"}`)
  if (run !== undefined) {
    if (run.attempts !== job.attempts) says(`job_runs.attempts is ${run.attempts}`)
    if (!RUN_STATUS[job.status]!.includes(run.status)) says(`job_runs.status is ${run.status}`)
    if (!IDEMPOTENCY[job.status]!.includes(run.idempotency)) says(`job_runs.idempotency_status is ${run.idempotency}`)
    if (job.status === "processing" && (run.worker !== job.lockedBy || run.startedAt !== job.lockedAt)) {
      says(`job_runs names worker ${run.worker} from ${run.startedAt}, the job's holder ${job.lockedBy} from ${job.lockedAt}`)
    }
    if ((run.finishedAt !== null) !== (job.status === "completed" || job.status === "failed")) says(`job_runs.finished_at is ${run.finishedAt}`)
    if (job.status === "failed" && run.lastError !== job.error) says(`job_runs.last_error is ${run.lastError}, job_queue.error ${job.error}`)
    if (run.key !== (job.key ?? job.id) || run.traceId !== job.traceId) says(`job_runs has idempotency key ${run.key} and trace ${run.traceId}`)
  }
  return broken
}
