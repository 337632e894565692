/**
 * The fault scenarios of issue 5, each one Effect that runs three worker
 * processes over a queue of numbered jobs, injects its fault, waits until the
 * queue is drained and returns what happened. The tests run them small and
 * assert on the result; `npm run chaos` runs them large and prints the table.
 */
import { Duration, Effect } from "effect"
import pg from "pg"
import {
  awaitCompleted,
  awaitFinished,
  awaitStarted,
  connection,
  enqueueJobs,
  enqueuedUpTo,
  JOB_TYPE,
  ORG,
  prepareQueue,
  query,
  spawnWorker,
  stopWorker,
  outageWarnings,
  tally,
  type Tally,
  warnings,
  type WorkerProcess,
  type WorkerSettings
} from "./cluster.js"

export interface ScenarioOptions {
  readonly jobs: number
  readonly settings: WorkerSettings
  /** How long to wait for the queue to drain after the fault. */
  readonly drainTimeout?: Duration.DurationInput
}

export interface ScenarioResult {
  readonly scenario: string
  readonly tally: Tally
  /** What "recovery" measures in this scenario, and its value in ms. */
  readonly recovery: { readonly label: string; readonly ms: number | undefined }
  /** WARN/ERROR log lines per worker process. */
  readonly warnings: Record<string, number>
  /** Workers still alive at the end (all but a killed one). */
  readonly workersAlive: number
  readonly details: Record<string, unknown>
  readonly workers: ReadonlyArray<WorkerProcess>
}

const WORKER_IDS = ["w1", "w2", "w3"] as const

/** Three worker processes on an empty queue, each started and listening. */
export const startCluster = (url: string, settings: WorkerSettings, extraEnv: Record<string, string> = {}) =>
  Effect.gen(function* () {
    yield* prepareQueue(url)
    const workers = yield* Effect.forEach(WORKER_IDS, (id) => spawnWorker(url, id, settings, extraEnv))
    yield* Effect.forEach(workers, (worker) => awaitStarted(worker), { concurrency: "unbounded" })
    // LISTEN is up once each worker's listen backend shows up; jobs then reach all three at once.
    yield* waitFor(
      "all three workers listen",
      Effect.map(listenConnections(url), (n) => n === WORKER_IDS.length),
      "30 seconds"
    )
    return workers
  })

/** How many LISTEN connections of chaos workers the database has. */
export const listenConnections = (url: string) =>
  Effect.map(
    query<{ n: number }>(url, `SELECT count(*)::int AS n FROM pg_stat_activity
                               WHERE application_name LIKE 'skiplock-chaos-w%-listen' AND datname = current_database()`),
    (rows) => rows[0]!.n
  )

export const waitFor = <E, R>(description: string, condition: Effect.Effect<boolean, E, R>, timeout: Duration.DurationInput) =>
  Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(Duration.decode(timeout))
    while (!(yield* condition)) {
      if (Date.now() > deadline) return yield* Effect.fail(new Error(`timed out waiting until ${description}`))
      yield* Effect.sleep("50 millis")
    }
  })

const summarize = (
  scenario: string,
  url: string,
  workers: ReadonlyArray<WorkerProcess>,
  options: ScenarioOptions,
  recovery: ScenarioResult["recovery"],
  details: Record<string, unknown>
) =>
  Effect.gen(function* () {
    const counts = yield* awaitFinished(url, options.drainTimeout ?? "60 seconds")
    const events = yield* query<{ event: string; n: number }>(url, `SELECT a.event, count(*)::int AS n FROM audit_logs a JOIN job_queue q ON q.id = a.job_id GROUP BY a.event ORDER BY a.event`)
    // How many attempts the jobs used, and the story of any job that did not end completed: what a failed run needs to be read.
    const attempts = yield* query<{ attempts: number; n: number }>(url, `SELECT attempts, count(*)::int AS n FROM job_queue WHERE job_type = '${JOB_TYPE}' GROUP BY 1 ORDER BY 1`)
    const unfinished = yield* query(url, `
      SELECT j.payload->>'n' AS n, j.status, j.attempts, j.error, j.run_at, j.locked_by,
             (SELECT json_agg(json_build_object('event', a.event, 'at', a.created_at, 'actor', a.actor, 'details', a.details) ORDER BY a.created_at)
              FROM audit_logs a WHERE a.job_id = j.id) AS audit
      FROM job_queue j WHERE j.job_type = '${JOB_TYPE}' AND (j.status <> 'completed' OR j.attempts >= 3) LIMIT 5`)
    const result: ScenarioResult = {
      scenario,
      tally: counts,
      recovery,
      warnings: Object.fromEntries(workers.map((worker) => [worker.id, warnings(worker).length])),
      workersAlive: workers.filter((worker) => worker.child.exitCode === null && worker.child.signalCode === null).length,
      details: {
        ...details,
        audit: Object.fromEntries(events.map((row) => [row.event, row.n])),
        attemptsUsed: Object.fromEntries(attempts.map((row) => [row.attempts, row.n])),
        ...(unfinished.length > 0 ? { unfinished } : {})
      },
      workers
    }
    return result
  })

/**
 * One of three workers stopped in the middle of a run: `SIGKILL` (kill -9, a
 * crash) or `SIGTERM` (graceful). Recovery: from the signal until the last job
 * the stopped worker held is completed (by another worker, or by itself while
 * draining on SIGTERM).
 */
export const stopOneWorker = (url: string, options: ScenarioOptions & { readonly signal?: "SIGKILL" | "SIGTERM" }) =>
  Effect.gen(function* () {
    const signal = options.signal ?? "SIGKILL"
    const workers = yield* startCluster(url, options.settings)
    yield* enqueueJobs(url, options.jobs)
    const victim = workers[1]!
    // Mid-run, and while the victim holds jobs.
    yield* awaitCompleted(url, Math.floor(options.jobs / 3))
    yield* waitFor("the victim holds jobs", Effect.map(heldBy(url, victim.id), (ids) => ids.length > 0), "10 seconds")
    const heldBefore = yield* heldBy(url, victim.id)
    victim.child.kill(signal)
    const stoppedAt = Date.now()
    const exit = yield* Effect.promise(() => victim.exited)
    // After a kill, what it held is what it still holds now (nothing of it runs any more).
    const held = signal === "SIGKILL" ? yield* heldBy(url, victim.id) : heldBefore

    yield* waitFor(
      "the stopped worker's jobs are completed",
      Effect.map(
        query<{ n: number }>(url, "SELECT count(*)::int AS n FROM job_queue WHERE id = ANY($1::uuid[]) AND status <> 'completed'", [held]),
        (rows) => rows[0]!.n === 0
      ),
      Duration.sum(Duration.millis(options.settings.leaseMs * 3), Duration.seconds(30))
    )
    const [times] = yield* query<{ last: Date | null }>(url, "SELECT max(completed_at) AS last FROM job_queue WHERE id = ANY($1::uuid[])", [held])
    const rescues = yield* query<{ deadWorker: string; n: number; last: Date }>(url, `
      SELECT details->>'deadWorker' AS "deadWorker", count(*)::int AS n, max(created_at) AS last FROM audit_logs
      WHERE event = 'job_rescued' AND job_id = ANY($1::uuid[]) GROUP BY 1`, [held])
    // Rescues of jobs it did not hold when stopped: a claim that reached the database as the worker stopped.
    const otherRescues = yield* query<{ deadWorker: string; n: number; events: string }>(url, `
      SELECT a.details->>'deadWorker' AS "deadWorker", count(*)::int AS n,
             string_agg((SELECT string_agg(b.event || '@' || b.actor, ' ' ORDER BY b.id) FROM audit_logs b WHERE b.job_id = a.job_id), ' | ') AS events
      FROM audit_logs a WHERE a.event = 'job_rescued' AND NOT (a.job_id = ANY($1::uuid[])) GROUP BY 1`, [held])
    const lastRescue = rescues.reduce<number | undefined>((max, r) => Math.max(max ?? 0, r.last.getTime()), undefined)
    const completedAfterMs = times?.last ? times.last.getTime() - stoppedAt : undefined
    const released = yield* query<{ n: number }>(url, "SELECT count(*)::int AS n FROM audit_logs WHERE event = 'job_released' AND job_id = ANY($1::uuid[])", [held])
    // The workers registry: a clean stop unregisters; a killed worker stays, its heartbeat frozen before the kill.
    const [registration] = yield* query<{ heartbeatBeforeStop: boolean }>(url,
      `SELECT last_heartbeat_at < $2 AS "heartbeatBeforeStop" FROM job_workers WHERE worker_id = $1`, [victim.id, new Date(stoppedAt)])
    return yield* summarize(
      signal === "SIGKILL" ? "kill -9 of 1 of 3 workers" : "SIGTERM of 1 of 3 workers",
      url,
      workers,
      options,
      signal === "SIGKILL"
        ? { label: "the dead worker's jobs rescued (back in the queue, runnable), after the kill", ms: lastRescue === undefined ? undefined : lastRescue - stoppedAt }
        : { label: "last job of the stopped worker completed, after the signal", ms: completedAfterMs },
      {
        completedAfterMs,
        ...(otherRescues.length > 0 ? { otherRescues } : {}),
        heldByStoppedWorker: held.length,
        rescuedFromStoppedWorker: Object.fromEntries(rescues.map((r) => [r.deadWorker, r.n])),
        releasedByStoppedWorker: released[0]!.n,
        stoppedWorkerRegistered: registration === undefined ? "no" : registration.heartbeatBeforeStop ? "yes, heartbeat before the stop" : "yes, heartbeat after the stop",
        exit
      }
    )
  })

/** `kill -9` of one of three workers in the middle of a run (see stopOneWorker). */
export const killOneWorker = (url: string, options: ScenarioOptions) => stopOneWorker(url, { ...options, signal: "SIGKILL" })

/** The ids of the jobs a worker holds (processing, locked by it). */
export const heldBy = (url: string, workerId: string) =>
  Effect.map(
    query<{ id: string }>(url, "SELECT id FROM job_queue WHERE status = 'processing' AND locked_by = $1", [workerId]),
    (rows) => rows.map((row) => row.id)
  )

/** Stops every worker with SIGTERM (graceful) and returns their exit codes. */
export const stopAll = (workers: ReadonlyArray<WorkerProcess>) =>
  Effect.forEach(
    workers.filter((worker) => worker.child.exitCode === null && worker.child.signalCode === null),
    (worker) => stopWorker(worker, "SIGTERM"),
    { concurrency: "unbounded" }
  )

/**
 * Recovery is the first completion after a fault: fails at once when no job is left to complete
 * (the run finished before `fault`), instead of waiting out the completion's timeout.
 */
const requireWorkLeft = (url: string, fault: string) =>
  Effect.flatMap(tally(url), (counts) =>
    counts.pending + counts.processing > 0
      ? Effect.void
      : Effect.dieMessage(`every job finished before ${fault}, so there is no recovery to measure: give the scenario more work (jobs or handlerMs)`)
  )

/** When the first job completed at or after `since` (ms), waiting for it up to `timeout`. */
const firstCompletionAfter = (url: string, since: number, timeout: Duration.DurationInput) =>
  Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(Duration.decode(timeout))
    while (true) {
      const [row] = yield* query<{ first: Date | null }>(url, "SELECT min(completed_at) AS first FROM job_queue WHERE completed_at >= $1", [new Date(since)])
      if (row?.first) return row.first.getTime()
      if (Date.now() > deadline) return undefined
      yield* Effect.sleep("20 millis")
    }
  })

/** Warnings about the database rather than one job, per worker: each must have noticed the outage and said so, briefly. */
const loggedOutage = (workers: ReadonlyArray<WorkerProcess>) =>
  Object.fromEntries(workers.map((worker) => [worker.id, outageWarnings(worker).length]))

/**
 * PostgreSQL restarted (fast shutdown, down for `downMs`, started again) in the
 * middle of a run. Recovery: from the server being up again until the first
 * job completes.
 */
export const restartPostgres = (
  server: { readonly stop: Effect.Effect<void>; readonly start: Effect.Effect<void, Error> },
  url: string,
  options: ScenarioOptions & { readonly downMs: number }
) =>
  Effect.gen(function* () {
    const workers = yield* startCluster(url, options.settings)
    yield* enqueueJobs(url, options.jobs)
    yield* awaitCompleted(url, Math.floor(options.jobs / 3))
    const [inFlight] = yield* query<{ n: number }>(url, "SELECT count(*)::int AS n FROM job_queue WHERE status = 'processing'")
    yield* server.stop
    const downAt = Date.now()
    yield* Effect.sleep(options.downMs)
    yield* server.start
    const upAt = Date.now()
    yield* requireWorkLeft(url, "the server went down")
    const first = yield* firstCompletionAfter(url, upAt, "60 seconds")
    yield* waitFor("every worker listens again", Effect.map(listenConnections(url), (n) => n === WORKER_IDS.length), "30 seconds")
    const listeningAfterMs = Date.now() - upAt
    return yield* summarize(
      "PostgreSQL restarted mid-run",
      url,
      workers,
      options,
      { label: "first job completed after the server was back", ms: first === undefined ? undefined : first - upAt },
      { outageMs: upAt - downAt, jobsInFlight: inFlight!.n, listeningAgainWithinMs: listeningAfterMs, outageWarnings: loggedOutage(workers) }
    )
  })

/** Terminates every backend of the chaos workers (pool and LISTEN connections); returns how many. */
export const terminateWorkerBackends = (url: string) =>
  Effect.map(
    query<{ n: number }>(url, `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
                               WHERE application_name LIKE 'skiplock-chaos-w%' AND datname = current_database()`),
    (rows) => rows[0]!.n
  )

/**
 * `pg_terminate_backend` on every worker connection, `rounds` times, `everyMs`
 * apart, during a run. Recovery: from the last round until the first job completes.
 */
export const terminateRepeatedly = (url: string, options: ScenarioOptions & { readonly rounds: number; readonly everyMs: number }) =>
  Effect.gen(function* () {
    const workers = yield* startCluster(url, options.settings)
    yield* enqueueJobs(url, options.jobs)
    yield* awaitCompleted(url, Math.floor(options.jobs / 5))
    let terminated = 0
    let lastAt = 0
    for (let round = 0; round < options.rounds; round++) {
      terminated += yield* terminateWorkerBackends(url)
      lastAt = Date.now()
      if (round === options.rounds - 1) yield* requireWorkLeft(url, "the last termination")
      yield* Effect.sleep(options.everyMs)
    }
    const first = yield* firstCompletionAfter(url, lastAt, "60 seconds")
    yield* waitFor("every worker listens again", Effect.map(listenConnections(url), (n) => n === WORKER_IDS.length), "30 seconds")
    return yield* summarize(
      `pg_terminate_backend x${options.rounds}`,
      url,
      workers,
      options,
      { label: "first job completed after the last termination", ms: first === undefined ? undefined : first - lastAt },
      { rounds: options.rounds, backendsTerminated: terminated }
    )
  })

/**
 * A transaction elsewhere locks `lockedRunning` running jobs and the next
 * `lockedWaiting` jobs in line, and stays idle in transaction for `holdMs`.
 * Recovery: from its end until every job it had locked is completed. (Locking
 * as many running jobs as the workers have slots would leave no slot to go on
 * with: the first version locked "the next 20 jobs", running ones first, and
 * so caught all 12 slots whenever they were all busy.)
 */
export const idleInTransaction = (
  url: string,
  options: ScenarioOptions & { readonly holdMs: number; readonly lockedRunning: number; readonly lockedWaiting: number }
) =>
  Effect.scoped(Effect.gen(function* () {
    const workers = yield* startCluster(url, options.settings)
    yield* enqueueJobs(url, options.jobs)
    yield* awaitCompleted(url, Math.floor(options.jobs / 4))
    const operator = yield* connection(url, "skiplock-chaos-operator")
    yield* Effect.promise(() => operator.query("BEGIN"))
    // An operator's edit in an open transaction: it row-locks running and waiting jobs alike. The running
    // jobs it takes are the ones claimed last, whose handlers are furthest from done; the waiting ones are
    // next in line. Each is locked as it is picked (skipping one a worker is claiming or completing right
    // then), so a waiting job is still waiting once locked: picked first and locked later, it was often
    // claimed in between, and the edit then held running jobs only.
    const locked = yield* Effect.promise(() =>
      operator.query<{ id: string; status: string }>(`
        WITH running AS (SELECT id FROM job_queue WHERE status = 'processing' ORDER BY locked_at DESC LIMIT $1 FOR UPDATE SKIP LOCKED),
             waiting AS (SELECT id FROM job_queue WHERE status = 'pending' ORDER BY priority, run_at, created_at LIMIT $2 FOR UPDATE SKIP LOCKED)
        UPDATE job_queue SET priority = priority
        WHERE id IN (SELECT id FROM running UNION ALL SELECT id FROM waiting)
        RETURNING id, status`, [options.lockedRunning, options.lockedWaiting])
    )
    const startedAt = Date.now()
    const [before] = yield* query<{ n: number }>(url, "SELECT count(*)::int AS n FROM job_queue WHERE status = 'completed'")
    yield* Effect.sleep(options.holdMs)
    const [during] = yield* query<{ n: number }>(url, "SELECT count(*)::int AS n FROM job_queue WHERE status = 'completed'")
    yield* Effect.promise(() => operator.query("ROLLBACK"))
    const endedAt = Date.now()
    const ids = locked.rows.map((row) => row.id)
    yield* waitFor(
      "the locked jobs are completed",
      Effect.map(query<{ n: number }>(url, "SELECT count(*)::int AS n FROM job_queue WHERE id = ANY($1::uuid[]) AND status <> 'completed'", [ids]), (rows) => rows[0]!.n === 0),
      "60 seconds"
    )
    const [last] = yield* query<{ last: Date }>(url, "SELECT max(completed_at) AS last FROM job_queue WHERE id = ANY($1::uuid[])", [ids])
    return yield* summarize(
      "idle in transaction (row locks)",
      url,
      workers,
      options,
      { label: "last locked job completed after the transaction ended", ms: last!.last.getTime() - endedAt },
      {
        holdMs: endedAt - startedAt,
        lockedRunning: locked.rows.filter((row) => row.status === "processing").length,
        lockedWaiting: locked.rows.filter((row) => row.status === "pending").length,
        completedWhileHeld: during!.n - before!.n
      }
    )
  }))

/**
 * Another client takes every free connection slot of the server for `holdMs`
 * (needs a throwaway server: never do this to a shared one). Recovery: from
 * its release until the first job completes.
 */
export const connectionsExhausted = (adminUrl: string, url: string, options: ScenarioOptions & { readonly holdMs: number }) =>
  Effect.scoped(Effect.gen(function* () {
    const workers = yield* startCluster(url, options.settings)
    // A quarter of the jobs is enqueued while the slots are taken, due when they are freed, so that work is waiting
    // then (otherwise fast workers, or one that kept a connection the hog missed, may finish everything before).
    const heldBack = Math.floor(options.jobs / 4)
    yield* enqueueJobs(url, options.jobs - heldBack)
    yield* enqueuedUpTo(url, options.jobs) // the held-back ones, enqueued below while no connection is to be had
    yield* awaitCompleted(url, Math.floor(options.jobs / 4))
    const hog: Array<pg.Client> = []
    yield* Effect.addFinalizer(() => Effect.promise(() => Promise.all(hog.map((client) => client.end().catch(() => undefined)))))
    const inserter = new pg.Client({ connectionString: url, application_name: "skiplock-chaos-hog" })
    inserter.on("error", () => undefined)
    yield* Effect.promise(() => inserter.connect())
    hog.push(inserter)
    // Take connection slots until the server refuses.
    const takeSlots = Effect.gen(function* () {
      while (true) {
        const client = new pg.Client({ connectionString: adminUrl, application_name: "skiplock-chaos-hog" })
        client.on("error", () => undefined)
        const ok = yield* Effect.promise(() => client.connect().then(() => true, () => false))
        if (!ok) return
        hog.push(client)
      }
    })
    yield* takeSlots
    // The workers' pooled connections are dropped too (as a pooler or network blip would), and the slots they free
    // are taken before they can reconnect; repeated until no worker connection is left.
    let dropped = 0
    for (let round = 0; round < 50; round++) {
      const [result] = yield* Effect.promise(() =>
        hog[0]!.query<{ n: number }>(`SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
                                      WHERE application_name LIKE 'skiplock-chaos-w%'`)
      ).pipe(Effect.map((r) => r.rows))
      dropped += result!.n
      yield* Effect.sleep("100 millis") // the terminated backends exit and free their slots
      yield* takeSlots
      if (result!.n === 0) break
    }
    const hogged = hog.length
    const startedAt = Date.now()
    yield* Effect.promise(() =>
      inserter.query(
        `INSERT INTO job_queue (organization_id, job_type, payload, max_attempts, run_at)
         SELECT $1, $2, jsonb_build_object('n', n), 3, now() + $5::int * interval '1 millisecond'
         FROM generate_series($3::int + 1, $3::int + $4::int) n`,
        [ORG, JOB_TYPE, options.jobs - heldBack, heldBack, options.holdMs]
      )
    )
    yield* Effect.sleep(options.holdMs)
    yield* Effect.promise(() => Promise.all(hog.splice(0).map((client) => client.end().catch(() => undefined))))
    const endedAt = Date.now()
    const first = yield* firstCompletionAfter(url, endedAt, "60 seconds")
    return yield* summarize(
      "every connection slot taken",
      url,
      workers,
      options,
      { label: "first job completed after the slots were freed", ms: first === undefined ? undefined : first - endedAt },
      { holdMs: endedAt - startedAt, slotsTaken: hogged, workerConnectionsDropped: dropped, outageWarnings: loggedOutage(workers) }
    )
  }))
