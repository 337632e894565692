// One seeded run of the job state machine (test/core/stateMachine.test.ts): 3 simulated workers and an
// operator call the queue's SQL functions in random steps on a clock that only moves forward (0–40 s a
// step, so 30 s leases run out now and then), optionally beside a second session that holds rows locked.
// After every step the database is compared with the reference model (queueModel.ts) and checked against
// the rules any step must keep (queueRules.ts); a failure names the seed and the step, and how to rerun it.
import pg from "pg"
import { isDeepStrictEqual } from "node:util"
import { type Random, seededRandom } from "../../src/billing/seededRandom.js"
import { type AuditEntry, BACKOFF, type Job, type NewJob, QueueModel, type Refusal, SECOND, WAITS } from "./queueModel.js"
import { type AuditRow, brokenRules, emptySnapshot, micros, readSnapshot, type Snapshot } from "./queueRules.js"

// Before the database's own time: the retry guard reads the earlier of the two (0032), and the model steps its own.
const T0 = Date.parse("2024-01-08T08:00:00Z") * 1000
const ORGS = ["0b7c7f4e-3c1a-4d7e-9a53-5c2d7f1e8a01", "7d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"]
const TYPES = ["report_generation", "sepa_export", "dunning_run"]
const KEYS = ["monthly-2030-01", "monthly-2030-02", "export-a"]
const WORKERS = [
  { id: "w1", types: ["report_generation", "sepa_export"] },
  { id: "w2", types: ["sepa_export", "dunning_run"] },
  { id: "w3", types: TYPES }
]
const MAX_LIVE_JOBS = 10

/** A worker process as the test plays it: what it believes it holds, and the handlers it is stopping. */
interface SimWorker {
  readonly id: string
  readonly types: ReadonlyArray<string>
  host: string
  pid: number
  alive: boolean
  /** When it last sent a heartbeat (every 10 s while it lives). */
  lastBeat: number
  readonly held: Map<string, { readonly attempt: number; committed: boolean }>
  readonly stopping: Set<string>
}

interface Target {
  readonly worker: string
  readonly id: string
  readonly attempt: number
}

const REFUSALS: Readonly<Record<string, Refusal>> = {
  P0002: "no_data_found",
  "55000": "not_in_state",
  "55P03": "lock_not_available",
  "22023": "invalid_parameter",
  "23514": "check_violation"
}

const iso = (at: number) => new Date(at / 1000).toISOString()
const short = (id: string) => id.slice(-6)
const show = (value: unknown) => JSON.stringify(value, (_, v) => (v instanceof Set ? [...v].sort() : v instanceof RegExp ? String(v) : v))

class Mismatch extends Error {}

const same = (actual: unknown, expected: unknown, what: string) => {
  if (!isDeepStrictEqual(actual, expected)) throw new Mismatch(`${what}: expected ${show(expected)}, got ${show(actual)}`)
}

export class StateMachineRun {
  private readonly random: Random
  private readonly model = new QueueModel()
  private readonly workers: Array<SimWorker>
  private now = T0
  private counter = 0
  private step = 0
  private readonly trace: Array<string> = []
  private snapshot: Snapshot = emptySnapshot
  private auditFrom = 0
  private lastAudit = 0
  private readonly seenAudit: Array<AuditRow> = []
  private readonly started = new Set<string>()
  /** The job an operator last failed while it ran: told to retry later, the operator often does so soon. */
  private failedWhileRunning: string | undefined
  private lockerOpen = false
  /** How often each kind of outcome came up: a run that never reaches one cannot find its bugs. */
  readonly tally = new Map<string, number>()

  constructor(
    private readonly client: pg.Client,
    private readonly seed: number,
    // A second session that keeps a transaction open for a while, holding job or job_runs rows locked,
    // or a run it has committed: the functions that skip locked rows pass them by, the others wait (cut
    // short by the client's lock_timeout, and then change nothing).
    private readonly locker?: pg.Client
  ) {
    this.random = seededRandom(seed)
    this.workers = WORKERS.map((worker, n) => ({ ...worker, host: "host-a", pid: 100 * (n + 1), alive: false, lastBeat: 0, held: new Map(), stopping: new Set() }))
  }

  async run(steps: number) {
    await this.client.query("DELETE FROM job_queue; DELETE FROM job_runs; DELETE FROM job_workers")
    const [{ max }] = (await this.client.query<{ max: string | null }>("SELECT max(id)::text AS max FROM audit_logs")).rows as [{ max: string | null }]
    this.auditFrom = this.lastAudit = Number(max ?? 0)
    for (this.step = 1; this.step <= steps; this.step++) {
      this.advanceClock()
      this.model.beginStep()
      try {
        await this.random.weighted(this.actions())()
        await this.check()
        if (this.step % 250 === 0 || this.step === steps) await this.checkAuditUnchanged()
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error)
        throw new Error(
          `state machine, seed ${this.seed}, step ${this.step} (t = ${(this.now - T0) / SECOND} s): ${message}\n` +
            `reproduce: STATE_MACHINE_SEED=${this.seed} STATE_MACHINE_STEPS=${this.step} npx vitest run test/core/stateMachine.test.ts -t "${this.locker === undefined ? "documented rule" : "locks job rows"}"\n` +
            `last steps:\n${this.trace.slice(-12).join("\n")}`
        )
      }
    }
    for (const row of this.seenAudit) this.count(`audit: ${row.event}`)
    if (process.env.STATE_MACHINE_TALLY) console.log(`seed ${this.seed}:`, Object.fromEntries([...this.tally].sort()))
    return this.tally
  }

  // Mostly short steps, now and then one past a lease.
  private advanceClock() {
    const r = this.random.next()
    const ms = r < 0.4 ? 0 : r < 0.85 ? this.random.int(0, 5_000) : this.random.int(0, 40_000)
    this.now += ms * 1000
  }

  private count(outcome: string, times = 1) {
    if (times > 0) this.tally.set(outcome, (this.tally.get(outcome) ?? 0) + times)
  }

  private say(what: string) {
    this.trace.push(`${this.step} t=${(this.now - T0) / SECOND}s ${what}`)
    if (this.trace.length > 50) this.trace.shift()
  }

  private actions(): ReadonlyArray<readonly [number, () => Promise<void>]> {
    const alive = this.workers.filter((worker) => worker.alive)
    const dead = this.workers.filter((worker) => !worker.alive)
    const room = this.model.live().length < MAX_LIVE_JOBS
    // Heartbeats come every 10 s: a worker whose heartbeat is due most likely sends it next.
    const due = alive.filter((worker) => worker.lastBeat <= this.now - 10 * SECOND)
    const byWorker = (weight: number, act: (worker: SimWorker) => Promise<void>) =>
      [alive.length > 0 ? weight : 0, () => act(this.random.pick(alive))] as const
    const choices: Array<readonly [number, () => Promise<void>]> = [
      [room ? 8 : 0, () => this.enqueue()],
      [room ? 3 : 0, () => this.runbookInsert()],
      byWorker(room ? 3 : 0, (worker) => this.enqueueAndClaim(worker)),
      byWorker(14, (worker) => this.claim(worker)),
      byWorker(9, (worker) => this.completeOne(this.target(worker))),
      byWorker(4, (worker) => this.completeMany(worker)),
      byWorker(8, (worker) => this.completeAndClaim(worker)),
      byWorker(8, (worker) => this.fail(this.target(worker))),
      byWorker(4, (worker) => this.release(this.target(worker))),
      byWorker(7, (worker) => this.commit(this.target(worker, (belief) => !belief.committed))),
      byWorker(4, (worker) => this.heartbeat(worker)),
      [due.length * 15, () => this.heartbeat(this.random.pick(due))],
      byWorker(6, (worker) => this.rescue(worker.id)),
      [3, () => this.failByHand()],
      [4, () => this.requeue()],
      [3, () => this.cancel()],
      [3, () => this.prune()],
      byWorker(2, (worker) => this.stop(worker)),
      byWorker(1, (worker) => this.crash(worker)),
      [dead.length > 0 ? 4 : 1, () => this.register(this.random.pick(dead.length > 0 ? dead : this.workers))],
      [1, () => this.forgetDeadWorkers()]
    ]
    if (this.locker !== undefined) choices.push([6, () => this.lockRows()], [4, () => this.unlockRows()])
    return choices
  }

  // ---- who does what to which job

  private nextJob(): NewJob {
    const r = this.random.next()
    const delay = r < 0.7 ? 0 : r < 0.9 ? this.random.int(1, 60) : -this.random.int(1, 60)
    return {
      id: this.newJobId(),
      org: this.random.pick(ORGS),
      type: this.random.pick(TYPES),
      maxAttempts: this.random.int(1, 3),
      priority: this.random.weighted([[8, 0], [1, -1], [1, 1]]),
      key: this.random.chance(0.35) ? this.random.pick(KEYS) : null,
      runAt: this.now + delay * SECOND,
      createdAt: this.now
    }
  }

  /** A UUIDv7-shaped id from the test's clock and a counter: ordered like the ones JobQueue makes, and the same on every run. */
  private newJobId() {
    const id = [this.now / 1000, this.seed * 0x1000000 + ++this.counter].map((n) => n.toString(16).padStart(12, "0")).join("")
    return `${id.slice(0, 8)}-${id.slice(8, 12)}-7000-8000-${id.slice(12)}`
  }

  private unknownId() {
    return `ffffffff-ffff-7fff-bfff-${this.random.int(0, 0xffffff).toString(16).padStart(12, "0")}`
  }

  /** Mostly a job the worker believes it holds; else a stale or foreign (worker, job, attempt). */
  private target(worker: SimWorker, wanted: (belief: { committed: boolean }) => boolean = () => true): Target {
    const beliefs = [...worker.held].filter(([, belief]) => wanted(belief))
    if (beliefs.length > 0 && this.random.chance(0.75)) {
      const [id, belief] = this.random.pick(beliefs)
      return { worker: worker.id, id, attempt: belief.attempt }
    }
    const jobs = [...this.model.jobs.values()]
    const held = jobs.filter((job) => job.holder !== null)
    const r = this.random.next()
    if (r < 0.4 && held.length > 0) {
      const job = this.random.pick(held)
      const holder = job.holder!
      return this.random.chance(0.5)
        ? { worker: holder.worker, id: job.id, attempt: holder.attempt + this.random.pick([-1, 1]) }
        : { worker: this.random.pick(WORKERS.filter((w) => w.id !== holder.worker)).id, id: job.id, attempt: holder.attempt }
    }
    if (r < 0.9 && jobs.length > 0) {
      const job = this.random.pick(jobs)
      return { worker: this.random.pick(WORKERS).id, id: job.id, attempt: Math.max(0, job.attempts + this.random.int(-1, 1)) }
    }
    return { worker: this.random.pick(WORKERS).id, id: this.unknownId(), attempt: 1 }
  }

  /** The job an operator names: mostly one in the state the command is for, sometimes any, gone or unknown. */
  private operatorTarget(wanted: (job: Job) => boolean): string {
    const r = this.random.next()
    const pruned = [...this.model.jobs.values()].filter((job) => job.pruned)
    if (r < 0.05) return this.unknownId()
    if (r < 0.1 && pruned.length > 0) return this.random.pick(pruned).id
    const live = this.model.live()
    const fitting = live.filter(wanted)
    if (fitting.length > 0 && r < 0.8) return this.random.pick(fitting).id
    return live.length > 0 ? this.random.pick(live).id : this.unknownId()
  }

  private simWorker(id: string) {
    return this.workers.find((worker) => worker.id === id)!
  }

  /** The worker is done with that attempt of the job (its handler returned, or it lost the job). */
  private letGo(target: Target) {
    const worker = this.simWorker(target.worker)
    if (worker.held.get(target.id)?.attempt === target.attempt) worker.held.delete(target.id)
  }

  // ---- SQL

  private async rows<R extends Record<string, unknown>>(text: string, params: ReadonlyArray<unknown> = []): Promise<ReadonlyArray<R>> {
    return (await this.client.query<R>(text, params as Array<unknown>)).rows
  }

  /** The rows, or the refusal (by SQLSTATE) of a function that raises; any other error fails the run. */
  private async orRefusal<R extends Record<string, unknown>>(text: string, params: ReadonlyArray<unknown>): Promise<ReadonlyArray<R> | Refusal> {
    try {
      return await this.rows<R>(text, params)
    } catch (error) {
      const refusal = REFUSALS[(error as { code?: string }).code ?? ""]
      if (refusal === undefined) throw error
      return refusal
    }
  }

  /** The rows, or "lock_not_available" when a worker's function waited for a row another session holds. */
  private async unlessLocked<R extends Record<string, unknown>>(text: string, params: ReadonlyArray<unknown>): Promise<ReadonlyArray<R> | "lock_not_available"> {
    const result = await this.orRefusal<R>(text, params)
    if (typeof result === "string" && result !== "lock_not_available") throw new Mismatch(`a worker's function raised ${result}`)
    return result as ReadonlyArray<R> | "lock_not_available"
  }

  // ---- the steps

  /** One job, or a batch of 2–3 (enqueueMany), whose idempotency keys may repeat one another's. */
  private newJobs(): ReadonlyArray<NewJob> {
    const jobs = Array.from({ length: this.random.weighted([[7, 1], [2, 2], [1, 3]]) }, () => this.nextJob())
    this.say(`${jobs.map((job) => `${short(job.id)} ${job.type} org ${ORGS.indexOf(job.org)} max ${job.maxAttempts} prio ${job.priority} key ${job.key} run_at +${(job.runAt - this.now) / SECOND}s`).join("; ")}`)
    return jobs
  }

  /** The jobs the model inserts, in order: one whose key its organization already has (also earlier in the batch) is not. */
  private inserted(jobs: ReadonlyArray<NewJob>): ReadonlyArray<string> {
    const inserted = jobs.filter((job) => this.model.enqueue(job) !== undefined).map((job) => job.id)
    this.count("enqueue: idempotency key taken", jobs.length - inserted.length)
    return inserted
  }

  private async enqueue() {
    this.say("enqueue")
    const jobs = this.newJobs()
    // JobQueue.enqueue's and enqueueMany's statement (src/JobQueue.ts).
    const rows = await this.rows<{ id: string }>(
      `INSERT INTO job_queue (id, organization_id, job_type, payload, priority, max_attempts, run_at, idempotency_key, created_at, updated_at)
       SELECT r.id, r.organization_id, r.job_type, r.payload, r.priority, r.max_attempts, r.run_at, r.idempotency_key, $2, $2
       FROM ROWS FROM (jsonb_to_recordset($1::jsonb)
                         AS (id uuid, organization_id uuid, job_type text, payload jsonb, priority smallint,
                             max_attempts integer, run_at timestamptz, idempotency_key text))
            WITH ORDINALITY AS r(id, organization_id, job_type, payload, priority, max_attempts, run_at, idempotency_key, ord)
       ORDER BY r.ord
       ON CONFLICT (organization_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id::text`,
      [asRecords(jobs), iso(this.now)]
    )
    const inserted = this.inserted(jobs)
    this.count("enqueue", inserted.length)
    same(rows.map((row) => row.id).sort(), [...inserted].sort(), "the jobs inserted (none whose key is taken)")
  }

  private async runbookInsert() {
    const org = this.random.pick(ORGS)
    const type = this.random.pick(TYPES)
    this.say(`runbook INSERT ${type} org ${ORGS.indexOf(org)}`)
    const [row] = await this.rows<{ id: string; runAt: string; createdAt: string }>(
      `INSERT INTO job_queue (organization_id, job_type, payload, status) VALUES ($1, $2, '{"batchId":"test-1"}'::jsonb, 'pending')
       RETURNING id::text, ${micros("run_at")} AS "runAt", ${micros("created_at")} AS "createdAt"`,
      [org, type]
    )
    // Runnable at once (run_at is its created_at), with the runbook's 3 attempts (compared with the model below).
    if (row!.runAt !== row!.createdAt) throw new Mismatch(`the runbook's job is not due at once: run_at ${row!.runAt}, created_at ${row!.createdAt}`)
    // Its times and id come from the database's clock (and random bits), not the test's, which runs in 2030: kept,
    // whether the job is due and where it stands in claim order would depend on the day the test runs (from
    // 2030-01-07 on it would not be due yet). It is taken as inserted at the test's now, with an id of the test's.
    const id = this.newJobId()
    await this.rows("UPDATE job_queue SET id = $2, run_at = $3, created_at = $3, updated_at = $3 WHERE id = $1", [row!.id, id, iso(this.now)])
    this.model.enqueue({ id, org, type, maxAttempts: 3, priority: 0, key: null, runAt: this.now, createdAt: this.now })
  }

  private async enqueueAndClaim(worker: SimWorker) {
    const limit = this.random.int(1, 5)
    this.say(`enqueue_and_claim, claim ${limit} for ${worker.id}`)
    const jobs = this.newJobs()
    const result = await this.unlessLocked<ClaimRow & { enqueued: ReadonlyArray<{ id: string }> }>(
      `SELECT enqueued, ${CLAIMED} FROM enqueue_and_claim($1::jsonb, NULL, NULL, $2, $3, $4::text[], $5, '30 seconds', '1 second')`,
      [asRecords(jobs), iso(this.now), worker.id, worker.types, limit]
    )
    const inserted = this.inserted(jobs)
    // The claim after the insert may wait for a locked run; then the statement fails as a whole.
    if (this.model.claimWaits(worker.types, limit, this.now)) {
      this.model.rolledBack(inserted)
      return this.waited(result, "enqueue_and_claim")
    }
    if (result === "lock_not_available") return this.waited(result, "enqueue_and_claim", false)
    this.count("enqueue_and_claim", inserted.length)
    same(result[0]?.enqueued.map((row) => row.id).sort(), [...inserted].sort(), "the jobs enqueue_and_claim inserted")
    this.claimed(worker, result, this.model.claim(worker.id, worker.types, limit, this.now))
  }

  private async claim(worker: SimWorker) {
    const limit = this.random.int(1, 5)
    this.say(`claim ${limit} for ${worker.id} (${worker.types.join(",")})`)
    const result = await this.unlessLocked<ClaimRow>(`SELECT ${CLAIMED} FROM claim_next_job($1, $2::text[], $3, $4, '30 seconds')`, [
      worker.id, worker.types, limit, iso(this.now)
    ])
    const passedBy = this.model.live().filter((job) => job.status === "pending" && job.runAt <= this.now && worker.types.includes(job.type) && this.model.locked.has(job.id))
    this.count("claim: a locked job passed by", passedBy.length)
    const expected = this.model.claim(worker.id, worker.types, limit, this.now)
    if (expected === WAITS || result === "lock_not_available") return this.waited(result, "claim_next_job", expected === WAITS)
    this.claimed(worker, result, expected)
  }

  /** A statement expected to wait for a row another session holds (and give up at the lock_timeout), or one that did. */
  private waited(result: ReadonlyArray<unknown> | "lock_not_available", what: string, expected = true) {
    this.count("waited for a locked row")
    same(result === "lock_not_available" ? result : "an answer", expected ? "lock_not_available" : "an answer", `${what} waiting for a locked row`)
  }

  private claimed(worker: SimWorker, rows: ReadonlyArray<ClaimRow>, expected: ReadonlyArray<Job> | typeof WAITS) {
    if (expected === WAITS) return this.waited(rows, "the claim")
    const claimed = rows.filter((row) => row.id !== null)
    same(claimed.map((row) => row.id), expected.map((job) => job.id), `the jobs ${worker.id} claimed, in claim order`)
    for (const [n, row] of claimed.entries()) {
      const job = expected[n]!
      // A job whose run committed is never run again: its claim says so, and the worker completes it unrun.
      const runStatus = job.run!.idempotency === "completed" ? "completed" : "in_progress"
      same({ attempts: row.attempts, runStatus: row.runStatus }, { attempts: job.attempts, runStatus }, `claim of ${short(job.id)}`)
      this.count(runStatus === "completed" ? "claim of a committed run" : "claim")
      worker.held.set(job.id, { attempt: row.attempts, committed: row.runStatus === "completed" })
      worker.stopping.delete(job.id)
    }
  }

  private async completeOne(target: Target) {
    this.say(`complete_job ${short(target.id)} by ${target.worker} attempt ${target.attempt}`)
    const result = await this.unlessLocked<{ ok: boolean }>("SELECT complete_job($1, $2, $3, $4) AS ok", [target.id, target.worker, target.attempt, iso(this.now)])
    const expected = this.model.complete(target.worker, [target], this.now, "wait")
    this.count(expected === WAITS ? "waited for a locked row" : expected.completed.length === 1 ? "complete_job" : "complete_job: refused")
    same(result, expected === WAITS ? "lock_not_available" : [{ ok: expected.completed.length === 1 }], "complete_job's answer")
    if (expected !== WAITS) this.letGo(target)
  }

  private async completeMany(worker: SimWorker) {
    const entries = this.completions(worker)
    this.say(`complete_jobs by ${worker.id}: ${entries.map((e) => `${short(e.id)}@${e.attempt}`).join(" ")}`)
    const result = await this.unlessLocked<{ id: string }>("SELECT done::text AS id FROM complete_jobs($1, $2::uuid[], $3::int[], $4) AS done", [
      worker.id, entries.map((e) => e.id), entries.map((e) => e.attempt), iso(this.now)
    ])
    const expected = this.model.complete(worker.id, entries, this.now, "wait")
    this.count(expected === WAITS ? "waited for a locked row" : `complete_jobs: ${expected.completed.length === entries.length ? "all" : "some refused"}`)
    same(result === "lock_not_available" ? result : result.map((row) => row.id).sort(), expected === WAITS ? "lock_not_available" : [...expected.completed].sort(), "complete_jobs' answer")
    if (expected !== WAITS) for (const entry of entries) this.letGo({ worker: worker.id, ...entry })
  }

  /** Jobs the worker believes done (some of its own, now and then a stale one). */
  private completions(worker: SimWorker): ReadonlyArray<{ readonly id: string; readonly attempt: number }> {
    const own = this.random.some([...worker.held].map(([id, belief]) => ({ id, attempt: belief.attempt })), 3)
    // A stale one: a job this worker holds, at another attempt than it holds it; or any job, at any attempt.
    const heldHere = this.model.live().filter((job) => job.holder?.worker === worker.id && !own.some((entry) => entry.id === job.id))
    const r = this.random.next()
    const stale = r < 0.15 && heldHere.length > 0
      ? [this.random.pick(heldHere)].map((job) => ({ id: job.id, attempt: job.holder!.attempt + this.random.pick([-1, 1]) }))
      : r < 0.3
      ? [this.target(worker)].filter((t) => t.worker === worker.id && !own.some((entry) => entry.id === t.id))
      : []
    return [...own, ...stale.map(({ id, attempt }) => ({ id, attempt }))]
  }

  private async completeAndClaim(worker: SimWorker) {
    const entries = this.completions(worker)
    const limit = this.random.int(0, 5)
    const skipLocked = this.random.chance(0.7)
    this.say(`complete_and_claim by ${worker.id}: ${entries.map((e) => `${short(e.id)}@${e.attempt}`).join(" ")}, claim ${limit}${skipLocked ? ", skip locked" : ""}`)
    const result = await this.unlessLocked<ClaimRow & { completedIds: ReadonlyArray<string>; busyIds: ReadonlyArray<string> }>(
      `SELECT completed_ids::text[] AS "completedIds", busy_ids::text[] AS "busyIds", ${CLAIMED}
       FROM complete_and_claim($1, $2::uuid[], $3::int[], $4::text[], $5, $6, '30 seconds', $7)`,
      [worker.id, entries.map((e) => e.id), entries.map((e) => e.attempt), worker.types, limit, iso(this.now), skipLocked]
    )
    // Its claim may wait for a locked run (the completions leave the pending jobs as they are); then nothing happens.
    const expected = this.model.claimWaits(worker.types, limit, this.now) ? WAITS : this.model.complete(worker.id, entries, this.now, skipLocked ? "skip" : "wait")
    if (expected === WAITS || result === "lock_not_available") return this.waited(result, "complete_and_claim", expected === WAITS)
    same([...result[0]!.completedIds].sort(), [...expected.completed].sort(), "the jobs complete_and_claim completed")
    same([...result[0]!.busyIds].sort(), [...expected.busy].sort(), "the jobs complete_and_claim found locked (busy)")
    this.count("complete_and_claim", expected.completed.length)
    this.count("complete_and_claim: a locked row left busy", expected.busy.length)
    for (const entry of entries) if (!expected.busy.includes(entry.id)) this.letGo({ worker: worker.id, ...entry })
    this.claimed(worker, result, this.model.claim(worker.id, worker.types, limit, this.now))
  }

  private async fail(target: Target) {
    const retryable = this.random.chance(0.7)
    const error = `boom at step ${this.step}`
    this.say(`fail_job_attempt ${short(target.id)} by ${target.worker} attempt ${target.attempt}${retryable ? " retryable" : " permanent"}`)
    const result = await this.unlessLocked<{ status: string; runAt: string }>(
      `SELECT status, ${micros("run_at")} AS "runAt" FROM fail_job_attempt($1, $2, $3, $4, $5, $6, '30 seconds')`,
      [target.id, target.worker, target.attempt, error, retryable, iso(this.now)]
    )
    const expected = this.model.failAttempt(target.worker, target.id, target.attempt, error, retryable, this.now)
    this.count(expected === WAITS ? "waited for a locked row" : `fail_job_attempt: ${expected?.status ?? "refused"}`)
    if (expected === WAITS) return same(result, "lock_not_available", "fail_job_attempt on a locked row")
    const answer = result === "lock_not_available" ? result : result.map((row) => ({ status: row.status, runAt: Number(row.runAt) }))
    same(answer, expected === undefined ? [] : [expected], "fail_job_attempt's answer (the new status and run_at; nothing when the worker does not hold that attempt)")
    this.letGo(target)
  }

  private async release(target: Target) {
    const lostConnection = this.random.chance(0.3)
    // After a lost connection the attempt runs again after the retry backoff, its error recorded.
    const retry = lostConnection ? { runAt: this.now + BACKOFF * target.attempt * target.attempt, error: "connection lost" } : undefined
    await this.releaseJob(target, lostConnection ? "database connection lost" : "worker shutdown", retry)
  }

  private async releaseJob(target: Target, reason: string, retry?: { readonly runAt: number; readonly error: string }) {
    this.say(`release_job ${short(target.id)} by ${target.worker} attempt ${target.attempt} (${reason})`)
    const result = await this.unlessLocked<{ ok: boolean }>("SELECT release_job($1, $2, $3, $4, $5, $6::timestamptz, $7::text) AS ok", [
      target.id, target.worker, target.attempt, iso(this.now), reason, retry === undefined ? null : iso(retry.runAt), retry?.error ?? null
    ])
    const expected = this.model.release(target.worker, target.id, target.attempt, reason, retry)
    this.count(expected === WAITS ? "waited for a locked row" : expected ? `release_job (${reason})` : "release_job: refused")
    same(result, expected === WAITS ? "lock_not_available" : [{ ok: expected }], "release_job's answer")
    if (expected !== WAITS) this.letGo(target)
  }

  private async commit(target: Target) {
    this.say(`commit_job_run ${short(target.id)} by ${target.worker} attempt ${target.attempt}`)
    const result = await this.unlessLocked<{ ok: boolean }>("SELECT commit_job_run($1, $2, $3, $4) AS ok", [target.id, target.worker, target.attempt, iso(this.now)])
    const expected = this.model.commitRun(target.worker, target.id, target.attempt)
    if (expected === WAITS || result === "lock_not_available") return this.waited(result, "commit_job_run", expected === WAITS)
    this.count(expected ? "commit_job_run" : "commit_job_run: refused")
    same(result, [{ ok: expected }], "commit_job_run's answer")
    const belief = this.simWorker(target.worker).held.get(target.id)
    if (expected && belief !== undefined) belief.committed = true
  }

  private async heartbeat(worker: SimWorker) {
    worker.lastBeat = this.now
    const reported = [...new Set([...worker.held.keys(), ...worker.stopping])]
    const live = this.model.live()
    // Now and then a job the worker never had (a bug elsewhere must not make it the worker's).
    const foreign = live.length > 0 && this.random.chance(0.1) ? this.random.pick(live).id : undefined
    if (foreign !== undefined && !reported.includes(foreign)) reported.push(foreign)
    this.say(`heartbeat of ${worker.id}: ${reported.map(short).join(" ")}`)
    const [row] = await this.rows<{ held: ReadonlyArray<string> }>(
      "SELECT ARRAY(SELECT h::text FROM worker_heartbeat($1, $2::uuid[], $3, '30 seconds') AS h) AS held",
      [worker.id, reported, iso(this.now)]
    )
    const held = this.model.heartbeat(worker.id, reported, this.now)
    same([...row!.held].sort(), [...held].sort(), `the jobs ${worker.id} still holds`)
    this.count("heartbeat: a job no longer held", [...worker.held.keys()].filter((id) => !held.has(id)).length)
    this.count("heartbeat: a locked row held", [...held].filter((id) => this.model.locked.has(id)).length)
    this.count("heartbeat: a locked row held past its lease", [...held].filter((id) => this.model.locked.has(id) && this.model.job(id)!.holder!.leaseUntil < this.now).length)
    // Jobs no longer held: their handlers are stopped, and reported running until they have (half a chance a beat).
    for (const id of [...worker.held.keys()]) {
      if (held.has(id)) continue
      worker.held.delete(id)
      worker.stopping.add(id)
    }
    for (const id of reported) if (!held.has(id) && worker.stopping.has(id) && this.random.chance(0.5)) worker.stopping.delete(id)
    // A worker whose row was forgotten registers again (src/internal/maintenance.ts).
    if (!this.model.workers.has(worker.id)) await this.registerProcess(worker)
  }

  private async rescue(rescuer: string) {
    this.say(`rescue_expired_jobs by ${rescuer}`)
    const rows = await this.rows<{ id: string; status: string; deadWorker: string }>(
      `SELECT id::text, status, dead_worker AS "deadWorker" FROM rescue_expired_jobs($1, $2, 100)`, [rescuer, iso(this.now)]
    )
    const sorted = <A extends { id: string }>(list: ReadonlyArray<A>) => [...list].sort((a, b) => (a.id < b.id ? -1 : 1))
    const rescued = this.model.rescue(rescuer, this.now)
    for (const job of rescued) this.count(`rescue: ${job.status}`)
    this.count("rescue: an expired lease spared", this.model.live().filter((job) => job.holder !== null && job.holder.leaseUntil < this.now && !this.model.locked.has(job.id) && !this.model.lockedRuns.has(job.id)).length)
    same(sorted(rows), sorted(rescued), "the jobs rescued")
  }

  private async failByHand() {
    const id = this.operatorTarget((job) => job.status === "pending" || job.status === "processing")
    const reason = this.random.chance(0.05) ? "  " : `stuck (step ${this.step})`
    const actor = this.random.chance(0.03) ? " " : "cli:alice"
    this.say(`fail_job_manually ${short(id)} reason "${reason}" actor "${actor}"`)
    const result = await this.orRefusal<{ id: string; status: string; previous: string }>(
      "SELECT id::text, status, previous_status AS previous FROM fail_job_manually($1, $2, $3, $4)", [id, reason, actor, iso(this.now)]
    )
    const expected = this.model.failManually(id, reason, actor, this.now)
    if (expected === "processing") this.failedWhileRunning = id
    const committed = this.model.job(id)?.run?.idempotency === "completed"
    this.count(`fail_job_manually: ${isRefusal(expected) ? `${expected}${committed ? " (run committed)" : ""}` : `${expected} → failed`}`)
    same(result, isRefusal(expected) ? expected : [{ id, status: "failed", previous: expected }], "fail_job_manually's answer")
  }

  private async requeue() {
    const id = this.failedWhileRunning !== undefined && this.random.chance(0.5) ? this.failedWhileRunning : this.operatorTarget((job) => job.status === "failed")
    const reason = this.random.weighted<string | null>([[5, null], [4, "fixed"], [1, " "]])
    this.say(`requeue_failed_job ${short(id)} reason ${JSON.stringify(reason)}`)
    const result = await this.orRefusal<{ id: string; status: string; previous: string }>(
      "SELECT id::text, status, previous_status AS previous FROM requeue_failed_job($1, $2, $3, $4)", [id, "cli:bob", reason, iso(this.now)]
    )
    const mayStillRun = this.model.job(id)?.status === "failed" && this.model.mayStillRun(this.model.job(id)!, this.now)
    const expected = this.model.requeue(id, "cli:bob", reason, this.now)
    this.count(`requeue_failed_job: ${mayStillRun ? "its handler may still run" : isRefusal(expected) ? expected : "requeued"}`)
    same(result, isRefusal(expected) ? expected : [{ id, status: "pending", previous: expected }], "requeue_failed_job's answer")
  }

  private async cancel() {
    const id = this.operatorTarget((job) => job.status === "pending")
    const reason = this.random.weighted<string | null>([[5, null], [4, "not needed"], [1, ""]])
    this.say(`cancel_pending_job ${short(id)} reason ${JSON.stringify(reason)}`)
    const result = await this.orRefusal<{ id: string; status: string; previous: string }>(
      "SELECT id::text, status, previous_status AS previous FROM cancel_pending_job($1, $2, $3, $4)", [id, "cli:carol", reason, iso(this.now)]
    )
    const expected = this.model.cancel(id, "cli:carol", reason, this.now)
    const committed = this.model.job(id)?.run?.idempotency === "completed"
    this.count(`cancel_pending_job: ${isRefusal(expected) ? `${expected}${committed ? " (run committed)" : ""}` : "cancelled"}`)
    same(result, isRefusal(expected) ? expected : [{ id, status: "failed", previous: expected }], "cancel_pending_job's answer")
  }

  private async prune() {
    const olderThan = this.now - this.random.int(0, 120) * SECOND
    const limit = this.random.pick([1, 2, 1000])
    this.say(`prune_finished_jobs older than -${(this.now - olderThan) / SECOND}s, at most ${limit}`)
    const [{ n }] = (await this.rows<{ n: number }>("SELECT prune_finished_jobs($1, $2) AS n", [iso(olderThan), limit])) as [{ n: number }]
    const prunable = this.model.prunable(olderThan)
    const kept = new Set((await this.rows<{ id: string }>("SELECT id::text FROM job_queue WHERE id = ANY ($1::uuid[])", [prunable.map((job) => job.id)])).map((row) => row.id))
    const gone = prunable.filter((job) => !kept.has(job.id))
    same(n, Math.min(limit, prunable.length), "the number of jobs pruned")
    same(gone.length, n, "the jobs pruned are finished ones past the retention")
    const newestGone = Math.max(...gone.map((job) => job.completedAt!))
    if (prunable.some((job) => kept.has(job.id) && job.completedAt! < newestGone)) throw new Mismatch("pruned a job while an older finished one stayed")
    this.model.pruned(gone.map((job) => job.id))
    this.count("pruned", gone.length)
  }

  private async stop(worker: SimWorker) {
    this.say(`${worker.id} stops: releases ${[...worker.held.keys()].map(short).join(" ")} and unregisters`)
    for (const [id, belief] of [...worker.held]) await this.releaseJob({ worker: worker.id, id, attempt: belief.attempt }, "worker shutdown")
    await this.rows("SELECT unregister_worker($1)", [worker.id])
    this.model.unregister(worker.id)
    this.forgetProcess(worker)
  }

  private crash(worker: SimWorker) {
    this.say(`${worker.id} dies (kill -9)`)
    this.forgetProcess(worker)
    return Promise.resolve()
  }

  private forgetProcess(worker: SimWorker) {
    worker.alive = false
    worker.held.clear()
    worker.stopping.clear()
  }

  /** A dead worker starts again as a new process (now and then on another host); a live one registers again. */
  private async register(worker: SimWorker) {
    if (!worker.alive) {
      worker.pid += 1
      if (this.random.chance(0.1)) worker.host = worker.host === "host-a" ? "host-b" : "host-a"
      worker.alive = true
    }
    this.say(`${worker.id} registers (${worker.host}, pid ${worker.pid})`)
    await this.registerProcess(worker)
  }

  private async registerProcess(worker: SimWorker) {
    await this.rows("SELECT register_worker($1, $2, $3, $4::text[], 5, $5)", [worker.id, worker.host, worker.pid, worker.types, iso(this.now)])
    this.model.register(worker.id, worker.host, worker.pid, this.now)
  }

  private async forgetDeadWorkers() {
    const olderThan = this.now - this.random.int(0, 120) * SECOND
    this.say(`forget_dead_workers older than -${(this.now - olderThan) / SECOND}s`)
    const [row] = await this.rows<{ n: number }>("SELECT forget_dead_workers($1) AS n", [iso(olderThan)])
    const forgotten = this.model.forgetDeadWorkers(olderThan)
    this.count("worker forgotten", forgotten)
    same(row!.n, forgotten, "the workers forgotten")
  }

  /**
   * Another session, in a transaction it keeps open for a while: it locks job rows (mostly) or job_runs
   * rows, or it is a transactional handler's transaction that has committed its run (commit_job_run) and
   * not yet ended (0020: the run's row lock keeps the rescuer and the other fenced functions off the job).
   */
  private async lockRows() {
    if (!this.lockerOpen) await this.locker!.query("BEGIN")
    this.lockerOpen = true
    const beliefs = this.workers.flatMap((worker) =>
      worker.alive ? [...worker.held].filter(([, belief]) => !belief.committed).map(([id, belief]) => ({ worker: worker.id, id, attempt: belief.attempt })) : []
    )
    if (beliefs.length > 0 && this.random.chance(0.25)) {
      const target = this.random.pick(beliefs)
      this.say(`a transactional handler's transaction commits the run of ${short(target.id)} by ${target.worker} attempt ${target.attempt}, and stays open`)
      const [row] = (await this.locker!.query<{ ok: boolean }>("SELECT commit_job_run($1, $2, $3, $4) AS ok", [target.id, target.worker, target.attempt, iso(this.now)])).rows
      same(row!.ok, this.model.commitInOpenTransaction(target.worker, target.id, target.attempt), "commit_job_run's answer in the open transaction")
      if (row!.ok) this.count("commit_job_run in an open transaction")
      return
    }
    const runs = this.random.chance(0.3)
    const locked = runs ? this.model.lockedRuns : this.model.locked
    const free = [...this.model.jobs.values()].filter((job) => !locked.has(job.id) && (runs ? job.run !== null : !job.pruned))
    // Mostly jobs a live worker believes it holds: its completions, heartbeats and rescues meet the lock.
    const held = free.filter((job) => this.workers.some((worker) => worker.alive && worker.held.has(job.id)))
    const ids = this.random.some((held.length > 0 && this.random.chance(0.7) ? held : free).map((job) => job.id), 2)
    this.say(`another session locks the ${runs ? "job_runs" : "job_queue"} rows of ${ids.map(short).join(" ")}`)
    await this.locker!.query(`SELECT 1 FROM ${runs ? "job_runs WHERE job_id" : "job_queue WHERE id"} = ANY ($1::uuid[]) FOR UPDATE`, [ids])
    for (const id of ids) locked.add(id)
  }

  private async unlockRows() {
    const commit = this.random.chance(0.6)
    this.say(`the other session ${commit ? "commits" : "rolls back"}`)
    if (this.lockerOpen) await this.locker!.query(commit ? "COMMIT" : "ROLLBACK")
    this.lockerOpen = false
    for (const id of this.model.endOpenTransaction(commit)) {
      for (const worker of this.workers) {
        const belief = worker.held.get(id)
        if (belief !== undefined) belief.committed = true
      }
    }
  }

  // ---- after every step

  private async check() {
    const after = await readSnapshot(this.client, this.lastAudit)
    for (const entry of after.audit) if (entry.event === "job_started" && entry.jobId !== null) this.started.add(entry.jobId)
    const broken = brokenRules(this.snapshot, after, { now: this.now, started: this.started })
    if (broken.length > 0) throw new Mismatch(`rules broken:\n  ${broken.join("\n  ")}`)
    this.compareJobs(after)
    this.compareWorkers(after)
    this.compareAudit(after.audit, this.model.audit)
    this.seenAudit.push(...after.audit)
    this.lastAudit = after.audit.at(-1)?.id ?? this.lastAudit
    this.snapshot = after
  }

  private compareJobs(after: Snapshot) {
    same([...after.jobs.keys()].sort(), this.model.live().map((job) => job.id).sort(), "the jobs in job_queue")
    for (const job of this.model.live()) {
      const row = after.jobs.get(job.id)!
      const { error, traceId: _, ...rest } = row
      same(rest, {
        id: job.id, status: job.status, attempts: job.attempts, maxAttempts: job.maxAttempts, priority: job.priority,
        lockedBy: job.holder?.worker ?? null, lockedAt: job.holder?.since ?? null, leaseExpiresAt: job.holder?.leaseUntil ?? null,
        runAt: job.runAt, createdAt: job.createdAt, completedAt: job.completedAt, org: job.org, key: job.key, type: job.type
      }, `job ${short(job.id)}`)
      const errorAsExpected = job.error instanceof RegExp ? error !== null && job.error.test(error) : error === job.error
      if (!errorAsExpected) throw new Mismatch(`job ${short(job.id)}: error ${JSON.stringify(error)}, expected ${show(job.error)}`)
    }
    const runs = [...this.model.jobs.values()].filter((job) => job.run !== null)
    same([...after.runs.keys()].sort(), runs.map((job) => job.id).sort(), "the jobs with a job_runs row")
    for (const job of runs) {
      const { jobId, status, idempotency, attempts, worker } = after.runs.get(job.id)!
      same({ jobId, status, idempotency, attempts, worker }, { jobId: job.id, ...job.run }, `job_runs of ${short(job.id)}`)
    }
  }

  private compareWorkers(after: Snapshot) {
    same([...after.workers.keys()].sort(), [...this.model.workers.keys()].sort(), "the workers in job_workers")
    for (const [workerId, row] of this.model.workers) {
      const actual = after.workers.get(workerId)!
      same({ ...actual, jobsInHand: [...actual.jobsInHand].sort() }, { workerId, ...row, jobsInHand: [...row.jobsInHand].sort() }, `job_workers row of ${workerId}`)
    }
  }

  // One entry per transition, with its event, actor and details; in any order within the step.
  private compareAudit(actual: ReadonlyArray<AuditRow>, expected: ReadonlyArray<AuditEntry>) {
    const key = (entry: { readonly jobId: string | null; readonly event: string; readonly actor: string }) => `${entry.jobId} ${entry.event} ${entry.actor}`
    same(actual.map(key).sort(), expected.map(key).sort(), "the audit entries of the step (job, event, actor)")
    const unmatched = [...actual]
    for (const entry of expected) {
      const row = unmatched.splice(unmatched.findIndex((candidate) => key(candidate) === key(entry)), 1)[0]!
      for (const [field, value] of Object.entries(entry.details)) {
        const got = field === "runAt" && typeof row.details.runAt === "string" ? Date.parse(row.details.runAt) * 1000 : row.details[field]
        same(got, value, `${entry.event} of ${short(entry.jobId)}: details.${field}`)
      }
    }
  }

  // audit_logs is append-only: the entries read step by step are still there, unchanged.
  private async checkAuditUnchanged() {
    const rows = await this.rows<Record<string, unknown>>(
      `SELECT a.id::text, a.job_id::text AS "jobId", a.event, a.actor, a.organization_id::text AS org, a.trace_id AS "traceId", a.details
       FROM audit_logs a WHERE a.id > $1 ORDER BY a.id`, [this.auditFrom]
    )
    same(rows.length, this.seenAudit.length, "the number of audit entries")
    for (const [n, row] of rows.entries()) same({ ...row, id: Number(row.id) }, { ...this.seenAudit[n] }, "an audit entry read before")
  }
}

interface ClaimRow extends Record<string, unknown> {
  readonly id: string | null
  readonly attempts: number
  readonly runStatus: string
}

// New jobs as JobQueue sends a batch: one JSON document of job_queue rows.
const asRecords = (jobs: ReadonlyArray<NewJob>) =>
  JSON.stringify(jobs.map((job) => ({
    id: job.id, organization_id: job.org, job_type: job.type, payload: {}, priority: job.priority, max_attempts: job.maxAttempts,
    run_at: iso(job.runAt), idempotency_key: job.key, created_by: null
  })))

const CLAIMED = `id::text, attempts, run_idempotency_status AS "runStatus"`

const isRefusal = (value: string): value is Refusal => ["no_data_found", "not_in_state", "lock_not_available", "invalid_parameter", "check_violation"].includes(value)
