// A reference model of the job queue's state machine, written from the documentation (docs/ARCHITECTURE.md
// "The state machine of a job", README "How it works" / "Reliability", docs/RUNBOOK.md) and the
// migrations' comments, not from the SQL: what each job, run and worker row should look like after each
// of the queue's functions, and what each function should answer. Times are microseconds since the epoch.
// test/core/stateMachine.test.ts runs random steps against the database and this model side by side.

export type Status = "pending" | "processing" | "completed" | "failed"
export type RunStatus = "running" | "completed" | "retry_scheduled" | "failed" | "released" | "rescued"
export type Idempotency = "in_progress" | "completed" | "failed"

export const SECOND = 1_000_000
/** The lease a claim gives and a heartbeat renews (the worker's default, 30 s). */
export const LEASE = 30 * SECOND
/** The retry backoff: attempt n runs again after BACKOFF × n² (the runbook's 30 s × Versuch²). */
export const BACKOFF = 30 * SECOND

export interface Holder {
  readonly worker: string
  readonly attempt: number
  readonly since: number
  leaseUntil: number
}

/** The job's job_runs row. */
export interface Run {
  status: RunStatus
  idempotency: Idempotency
  attempts: number
  worker: string
}

/** A job as an enqueue describes it. */
export interface NewJob {
  readonly id: string
  readonly org: string
  readonly type: string
  readonly maxAttempts: number
  readonly priority: number
  readonly key: string | null
  readonly runAt: number
  readonly createdAt: number
}

export interface Job extends Omit<NewJob, "runAt"> {
  status: Status
  attempts: number
  runAt: number
  /** The exact text, or a pattern it must match. */
  error: string | RegExp | null
  completedAt: number | null
  holder: Holder | null
  run: Run | null
  /** Failed by hand while this worker ran it: a retry waits until the worker has let go (0022). */
  failedByHand: { readonly worker: string; readonly at: number } | null
  pruned: boolean
}

export interface WorkerRow {
  host: string
  pid: number
  startedAt: number
  lastHeartbeat: number
  jobsInHand: ReadonlySet<string>
  until: number | null
}

export interface AuditEntry {
  readonly jobId: string
  readonly event: string
  readonly actor: string
  /** Fields its details must have (`runAt` in microseconds). */
  readonly details: Readonly<Record<string, unknown>>
}

/** An operator function's refusal, by SQLSTATE. */
export type Refusal =
  | "no_data_found" // P0002: no job with that id
  | "not_in_state" // 55000: the job's state forbids it
  | "lock_not_available" // 55P03: it waited for a row another session holds (the test's lock_timeout)
  | "invalid_parameter" // 22023: fail_job_manually without a reason
  | "check_violation" // 23514: a blank actor or reason (audit_logs constraints, 0027)

/** What a worker's fenced function that would wait for a locked row does: nothing (the test's lock_timeout). */
export const WAITS = "waits" as const

const claimOrder = (a: Job, b: Job) =>
  a.priority - b.priority || a.runAt - b.runAt || a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

const blank = (text: string | null) => text !== null && text.trim() === ""

export class QueueModel {
  readonly jobs = new Map<string, Job>()
  readonly workers = new Map<string, WorkerRow>()
  /** job_queue rows another session holds locked (FOR UPDATE), by job id. */
  readonly locked = new Set<string>()
  /** job_runs rows another session holds locked, by job id: "the worker's statements wait for it" (docs/RUNBOOK.md). */
  readonly lockedRuns = new Set<string>()
  /** Runs committed in that session's open transaction: committed once it commits. */
  private readonly committing = new Set<string>()
  /** The audit entries the current step must append, in any order. */
  audit: Array<AuditEntry> = []

  beginStep() {
    this.audit = []
  }

  private log(job: Job, event: string, actor: string, details: Record<string, unknown> = {}) {
    this.audit.push({ jobId: job.id, event, actor, details })
  }

  live(): ReadonlyArray<Job> {
    return [...this.jobs.values()].filter((job) => !job.pruned)
  }

  job(id: string): Job | undefined {
    const job = this.jobs.get(id)
    return job === undefined || job.pruned ? undefined : job
  }

  holds(id: string, worker: string, attempt: number): boolean {
    const holder = this.job(id)?.holder
    return holder !== null && holder !== undefined && holder.worker === worker && holder.attempt === attempt
  }

  /** A new pending job, or undefined: its organization already has a job with that idempotency key. */
  enqueue(input: NewJob): Job | undefined {
    if (input.key !== null && this.live().some((job) => job.org === input.org && job.key === input.key)) return undefined
    const job: Job = {
      ...input,
      status: "pending",
      attempts: 0,
      error: null,
      completedAt: null,
      holder: null,
      run: null,
      failedByHand: null,
      pruned: false
    }
    this.jobs.set(job.id, job)
    return job
  }

  private runLocked(job: Job) {
    return job.run !== null && this.lockedRuns.has(job.id)
  }

  private claimable(types: ReadonlyArray<string>, limit: number, now: number): ReadonlyArray<Job> {
    return this.live()
      .filter((job) => job.status === "pending" && job.runAt <= now && types.includes(job.type) && !this.locked.has(job.id))
      .sort(claimOrder)
      .slice(0, limit)
  }

  /** A claim skips locked job rows, but waits for the locked run of a job it takes. */
  claimWaits(types: ReadonlyArray<string>, limit: number, now: number): boolean {
    return this.claimable(types, limit, now).some((job) => this.runLocked(job))
  }

  /**
   * pending → processing for the first `limit` runnable jobs of the types (priority, run_at, age, id),
   * skipping locked rows: the attempt counted, a lease, the run `running`; a run that committed stays
   * committed (the worker completes the job without running it).
   */
  claim(worker: string, types: ReadonlyArray<string>, limit: number, now: number): ReadonlyArray<Job> | typeof WAITS {
    if (this.claimWaits(types, limit, now)) return WAITS
    const claimed = this.claimable(types, limit, now)
    for (const job of claimed) {
      job.status = "processing"
      job.attempts += 1
      job.holder = { worker, attempt: job.attempts, since: now, leaseUntil: now + LEASE }
      job.run = { status: "running", idempotency: job.run?.idempotency === "completed" ? "completed" : "in_progress", attempts: job.attempts, worker }
      this.log(job, "job_started", worker, { attempt: job.attempts, maxAttempts: job.maxAttempts })
    }
    return claimed
  }

  private finish(job: Job, status: "completed" | "failed", now: number, error: string | RegExp | null) {
    job.status = status
    job.completedAt = now
    job.error = error
    job.holder = null
  }

  /**
   * processing → completed for the jobs the worker holds at those attempts. `wait`: a held job whose row
   * another session holds makes the statement wait; `skip` (complete_and_claim with p_skip_locked)
   * leaves it for later and reports it busy.
   */
  complete(
    worker: string,
    entries: ReadonlyArray<{ readonly id: string; readonly attempt: number }>,
    now: number,
    locks: "wait" | "skip"
  ): { readonly completed: ReadonlyArray<string>; readonly busy: ReadonlyArray<string> } | typeof WAITS {
    const held = [...new Set(entries.filter((entry) => this.holds(entry.id, worker, entry.attempt)).map((entry) => entry.id))]
    const busy = held.filter((id) => this.locked.has(id))
    if (locks === "wait" && busy.length > 0) return WAITS
    const completed = held.filter((id) => !this.locked.has(id))
    if (completed.some((id) => this.runLocked(this.jobs.get(id)!))) return WAITS
    for (const id of completed) {
      const job = this.jobs.get(id)!
      this.finish(job, "completed", now, null)
      job.run = { ...job.run!, status: "completed", idempotency: "completed" }
      this.log(job, "job_completed", worker)
    }
    return { completed, busy }
  }

  /**
   * A failed attempt of a held job: pending again at now + 30 s × attempt² while it is retryable and
   * attempts are left, else failed; completed instead when its run had committed (0021).
   */
  failAttempt(worker: string, id: string, attempt: number, error: string, retryable: boolean, now: number):
    | { readonly status: Status; readonly runAt: number }
    | typeof WAITS
    | undefined {
    if (!this.holds(id, worker, attempt)) return undefined
    const job = this.jobs.get(id)!
    if (this.locked.has(id) || this.runLocked(job)) return WAITS
    const run = job.run!
    if (run.idempotency === "completed") {
      this.finish(job, "completed", now, null)
      run.status = "completed"
      this.log(job, "job_completed", worker)
    } else if (retryable && job.attempts < job.maxAttempts) {
      job.status = "pending"
      job.runAt = now + BACKOFF * job.attempts * job.attempts
      job.error = error
      job.holder = null
      run.status = "retry_scheduled"
      this.log(job, "job_retry_scheduled", worker, { attempt: job.attempts, error, runAt: job.runAt })
    } else {
      this.finish(job, "failed", now, error)
      run.status = "failed"
      run.idempotency = "failed"
      this.log(job, "job_failed", worker, { attempt: job.attempts, error })
    }
    return { status: job.status, runAt: job.runAt }
  }

  /** processing → pending without counting the attempt; with `retry`, not before its time, its error recorded. */
  release(worker: string, id: string, attempt: number, reason: string, retry?: { readonly runAt: number; readonly error: string }): boolean | typeof WAITS {
    if (!this.holds(id, worker, attempt)) return false
    const job = this.jobs.get(id)!
    if (this.locked.has(id) || this.runLocked(job)) return WAITS
    job.status = "pending"
    job.attempts -= 1
    job.holder = null
    if (retry !== undefined) {
      job.runAt = retry.runAt
      job.error = retry.error
    }
    job.run = { ...job.run!, status: "released", attempts: job.attempts }
    this.log(job, "job_released", worker, { reason })
    return true
  }

  /** The run of a held job commits with the handler's transaction (0020); never waits for the job's row. */
  commitRun(worker: string, id: string, attempt: number): boolean | typeof WAITS {
    const run = this.job(id)?.run
    if (!this.holds(id, worker, attempt) || run === null || run === undefined || run.idempotency !== "in_progress") return false
    if (this.lockedRuns.has(id)) return WAITS
    run.idempotency = "completed"
    return true
  }

  /**
   * commit_job_run in another session's transaction that stays open: the run is committed once that
   * transaction commits; until it ends, its row is locked.
   */
  commitInOpenTransaction(worker: string, id: string, attempt: number): boolean {
    const run = this.job(id)?.run
    // (That transaction sees its own commit of the run, and its own locks do not hold it up.)
    if (!this.holds(id, worker, attempt) || run === null || run === undefined || run.idempotency !== "in_progress" || this.committing.has(id)) return false
    this.lockedRuns.add(id)
    this.committing.add(id)
    return true
  }

  /** The other session's transaction ends: its locks go, and its runs are committed if it commits. Returns those runs. */
  endOpenTransaction(commit: boolean): ReadonlyArray<string> {
    const committed = commit ? [...this.committing] : []
    for (const id of committed) this.jobs.get(id)!.run!.idempotency = "completed"
    this.locked.clear()
    this.lockedRuns.clear()
    this.committing.clear()
    return committed
  }

  /**
   * Renews the leases of the reported jobs the worker holds and answers which it holds; a held row locked
   * elsewhere is not renewed, and counts as held while its lease lasts or the worker's last heartbeat
   * reported it and still covers it (0010, 0020, 0028). The worker's row records the reported jobs (also
   * the ones no longer held, whose handlers still run, 0026), unless a newer heartbeat came first.
   */
  heartbeat(worker: string, reported: ReadonlyArray<string>, now: number): ReadonlySet<string> {
    const row = this.workers.get(worker)
    const held = new Set<string>()
    for (const id of reported) {
      const job = this.job(id)
      if (job?.holder?.worker !== worker) continue
      if (!this.locked.has(id)) {
        job.holder.leaseUntil = Math.max(job.holder.leaseUntil, now + LEASE)
        held.add(id)
      } else if (job.holder.leaseUntil >= now || (row !== undefined && row.until !== null && row.until >= now && row.jobsInHand.has(id))) {
        held.add(id)
      }
    }
    if (row !== undefined && row.lastHeartbeat <= now) {
      row.lastHeartbeat = now
      row.jobsInHand = new Set(reported)
      row.until = now + LEASE
    }
    return held
  }

  /**
   * Jobs whose lease ran out and that no live worker reports holding go back to pending (the attempt
   * counted, the place in line kept), or fail on their last attempt; a committed run is completed.
   * Locked rows are skipped, a locked run too (it may be committing).
   */
  rescue(rescuer: string, now: number): ReadonlyArray<{ readonly id: string; readonly status: Status; readonly deadWorker: string }> {
    const spared = (job: Job) => {
      const row = this.workers.get(job.holder!.worker)
      return row !== undefined && row.until !== null && row.until >= now && row.jobsInHand.has(job.id)
    }
    const expired = this.live().filter((job) => job.holder !== null && job.holder.leaseUntil < now && !this.locked.has(job.id) && !this.runLocked(job) && !spared(job))
    return expired.map((job) => {
      const deadWorker = job.holder!.worker
      const run = job.run!
      if (run.idempotency === "completed") {
        this.finish(job, "completed", now, null)
        run.status = "completed"
      } else if (job.attempts < job.maxAttempts) {
        job.status = "pending"
        job.holder = null
        job.error = new RegExp(`worker ${deadWorker}\\b`)
        run.status = "rescued"
      } else {
        this.finish(job, "failed", now, new RegExp(`worker ${deadWorker}\\b`))
        run.status = "failed"
        run.idempotency = "failed"
      }
      this.log(job, "job_rescued", rescuer, { deadWorker, newStatus: job.status, attempt: job.attempts })
      if (job.status === "completed") this.log(job, "job_completed", rescuer)
      if (job.status === "failed") this.log(job, "job_failed", rescuer, { attempt: job.attempts })
      return { id: job.id, status: job.status, deadWorker }
    })
  }

  private operatorTarget(id: string): Job | Refusal {
    const job = this.job(id)
    if (job === undefined) return "no_data_found"
    if (this.locked.has(id)) return "lock_not_available"
    return job
  }

  /** pending | processing → failed by an operator, unless the job's run committed (0020, 0030). */
  failManually(id: string, reason: string, actor: string, now: number): Refusal | Status {
    if (blank(reason)) return "invalid_parameter"
    const job = this.operatorTarget(id)
    if (typeof job === "string") return job
    if (job.status !== "pending" && job.status !== "processing") return "not_in_state"
    if (this.runLocked(job)) return "lock_not_available"
    if (job.run?.idempotency === "completed") return "not_in_state"
    if (blank(actor)) return "check_violation"
    const previous = job.status
    const lockedBy = job.holder?.worker ?? null
    job.failedByHand = lockedBy === null ? null : { worker: lockedBy, at: now }
    this.finish(job, "failed", now, `failed manually: ${reason}`)
    if (job.run !== null) job.run = { ...job.run, status: "failed", idempotency: "failed" }
    this.log(job, "job_failed_manually", actor, { reason, previousStatus: previous, lockedBy })
    return previous
  }

  /**
   * The worker that may still run a job failed by hand while it ran: no heartbeat of it since the fail
   * has let go of the job (reported it no longer running), and it is not known dead (0022, 0025, 0026).
   */
  mayStillRun(job: Job, now: number): boolean {
    if (job.failedByHand === null) return false
    const row = this.workers.get(job.failedByHand.worker)
    if (row === undefined) return false
    const letGo = row.lastHeartbeat > job.failedByHand.at && !row.jobsInHand.has(job.id)
    return !letGo && (row.until ?? row.lastHeartbeat + LEASE) >= now
  }

  /** failed → pending with fresh attempts; a committed run stays committed. */
  requeue(id: string, actor: string, reason: string | null, now: number): Refusal | Status {
    const job = this.operatorTarget(id)
    if (typeof job === "string") return job
    if (job.status !== "failed" || this.mayStillRun(job, now)) return "not_in_state"
    if (this.runLocked(job)) return "lock_not_available"
    if (blank(actor) || blank(reason)) return "check_violation"
    job.status = "pending"
    job.attempts = 0
    job.runAt = now
    job.error = null
    job.completedAt = null
    job.failedByHand = null
    if (job.run !== null) {
      job.run = { ...job.run, status: "retry_scheduled", attempts: 0, idempotency: job.run.idempotency === "completed" ? "completed" : "in_progress" }
    }
    this.log(job, "job_requeued", actor, reason === null ? {} : { reason })
    return "failed"
  }

  /** pending → failed before it runs (again), unless its run committed (0030). */
  cancel(id: string, actor: string, reason: string | null, now: number): Refusal | Status {
    const job = this.operatorTarget(id)
    if (typeof job === "string") return job
    if (job.status !== "pending") return "not_in_state"
    if (this.runLocked(job)) return "lock_not_available"
    if (job.run?.idempotency === "completed") return "not_in_state"
    if (blank(actor) || blank(reason)) return "check_violation"
    this.finish(job, "failed", now, `cancelled by ${actor}${reason === null ? "" : `: ${reason}`}`)
    if (job.run !== null) job.run = { ...job.run, status: "failed", idempotency: "failed" }
    this.log(job, "job_cancelled", actor, reason === null ? {} : { reason })
    return "pending"
  }

  /** The finished jobs retention may delete (oldest first), locked rows skipped. */
  prunable(olderThan: number): ReadonlyArray<Job> {
    return this.live()
      .filter((job) => (job.status === "completed" || job.status === "failed") && job.completedAt! < olderThan && !this.locked.has(job.id))
      .sort((a, b) => a.completedAt! - b.completedAt!)
  }

  /** Jobs inserted by a statement that then failed as a whole. */
  rolledBack(ids: Iterable<string>) {
    for (const id of ids) this.jobs.delete(id)
  }

  pruned(ids: Iterable<string>) {
    for (const id of ids) this.jobs.get(id)!.pruned = true
  }

  /**
   * A worker process announces itself; a new process under the same id starts afresh (0029). The same
   * process announcing itself again keeps its row: a registration reports no jobs in hand, so it is no
   * heartbeat, and the retry guard still waits for one (0031).
   */
  register(worker: string, host: string, pid: number, now: number) {
    const row = this.workers.get(worker)
    if (row !== undefined && row.host === host && row.pid === pid) return
    this.workers.set(worker, { host, pid, startedAt: now, lastHeartbeat: now, jobsInHand: new Set(), until: null })
  }

  unregister(worker: string) {
    this.workers.delete(worker)
  }

  forgetDeadWorkers(olderThan: number): number {
    const dead = [...this.workers].filter(([, row]) => row.lastHeartbeat < olderThan).map(([worker]) => worker)
    for (const worker of dead) this.workers.delete(worker)
    return dead.length
  }
}
