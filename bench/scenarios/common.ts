/** What every scenario shares: the run context, metrics, fresh databases, and the drain loop. */
import { performance } from "node:perf_hooks"
import type pg from "pg"
import type { BenchConfig, ScenarioName } from "../config.js"
import { connect, createFreshDatabase, settleSessions, sleep, type FreshDatabase } from "../db.js"
import type { BenchPayload, SystemAdapter, SystemInstance } from "../systems/types.js"

export interface Metric {
  readonly scenario: ScenarioName
  readonly key: string
  readonly label: string
  readonly unit: string
  readonly better: "higher" | "lower"
  /** Whether skiplock ÷ peer means something (not for values near zero or of either sign). */
  readonly comparable: boolean
  /** Per system id: one value per round (null: the round produced no value). */
  readonly values: Record<string, Array<number | null>>
  /** Per system id: remarks such as "cut off after 20 s", each with the rounds it applied to. */
  readonly notes: Record<string, Record<string, Array<number>>>
}

export interface Context {
  readonly config: BenchConfig
  readonly systems: ReadonlyArray<SystemAdapter>
  readonly metrics: Array<Metric>
  /** Raw per-run records for the JSON file. */
  readonly runs: Array<Record<string, unknown>>
  log(message: string): void
  /** Something a system did that the reader should know (counted per message). */
  warn(system: string, message: string): void
}

export const metric = (
  ctx: Context,
  scenario: ScenarioName,
  key: string,
  label: string,
  unit: string,
  better: "higher" | "lower",
  comparable = true
): Metric => {
  const existing = ctx.metrics.find((m) => m.key === key)
  if (existing !== undefined) return existing
  const created: Metric = { scenario, key, label, unit, better, comparable, values: {}, notes: {} }
  ctx.metrics.push(created)
  return created
}

export const record = (m: Metric, system: string, round: number, value: number | null, note?: string): void => {
  const values = (m.values[system] ??= [])
  while (values.length < round) values.push(null)
  values[round] = value === null || Number.isFinite(value) ? value : null
  if (note !== undefined) {
    const notes = (m.notes[system] ??= {})
    ;(notes[note] ??= []).push(round)
  }
}

/**
 * The systems in the order they run in round `round`: as listed in even rounds, reversed in odd ones
 * (A B C, C B A, A B C, …). No system always runs first, and every pair swaps places from one round
 * to the next, so a drift of the machine within a round, or the cold start of whichever runs first,
 * falls on each side in turn instead of always on the same one.
 */
export const roundOrder = <A>(systems: ReadonlyArray<A>, round: number): Array<A> =>
  round % 2 === 0 ? [...systems] : [...systems].reverse()

export const poolSizeFor = (concurrency: number): number => Math.max(10, concurrency + 5)

/** Creates a fresh database, installs the system, runs `f`, drops the database. */
export const withFreshDatabase = async <A>(
  ctx: Context,
  system: SystemAdapter,
  label: string,
  f: (db: FreshDatabase) => Promise<A>
): Promise<A> => {
  const db = await createFreshDatabase(ctx.config.serverUrl, `${system.id}_${label}`)
  try {
    await system.install(db.url)
    return await f(db)
  } finally {
    await db.drop()
  }
}

/**
 * Opens the system on a database, runs `f`, closes it, and makes sure the
 * system's sessions are gone: any left after half a second are terminated and
 * reported, so they cannot leak into the next measurement.
 */
export const withInstance = async <A>(
  ctx: Context,
  system: SystemAdapter,
  db: FreshDatabase,
  poolSize: number,
  f: (instance: SystemInstance) => Promise<A>
): Promise<A> => {
  const instance = await system.open(db.url, { poolSize })
  try {
    return await f(instance)
  } finally {
    await instance.close()
    await settleAfterClose(ctx, system, db)
  }
}

export const settleAfterClose = async (ctx: Context, system: SystemAdapter, db: FreshDatabase): Promise<void> => {
  await db.closeObserver()
  const admin = await connect(ctx.config.serverUrl)
  try {
    const left = await settleSessions(admin, db.name)
    if (left.length > 0) {
      ctx.warn(system.id, `left session(s) open after closing (${[...new Set(left)].join(", ")}); the harness terminated them`)
    }
  } finally {
    await admin.end()
  }
}

/** Queues `count` jobs through the system's own batch insert. */
export const enqueueAll = async (instance: SystemInstance, count: number, batchSize: number, firstIndex = 0): Promise<void> => {
  for (let start = 0; start < count; start += batchSize) {
    const size = Math.min(batchSize, count - start)
    const payloads: Array<BenchPayload> = []
    for (let k = 0; k < size; k++) payloads.push({ i: firstIndex + start + k })
    await instance.enqueueBatch(payloads)
  }
}

export interface DrainResult {
  readonly jobs: number
  readonly concurrency: number
  /** Jobs finished in the database when the drain ended (all of them unless cut off). */
  readonly completed: number
  readonly elapsedMs: number
  /** From starting the workers to the first handler call. */
  readonly firstJobMs: number | null
  readonly jobsPerSec: number
  readonly cutOff: boolean
  /** Statements the system sent during the drain (client-side count). */
  readonly statements: number
  /** Harness queries run against the system's database during the drain. */
  readonly probes: number
}

/**
 * Starts the workers on `jobs` queued jobs and waits until the database has
 * no unfinished job left; the rate is jobs finished divided by the time from
 * starting the workers. A drain that has not started half its jobs after
 * `timeoutMs` is cut off there (a polling or stuck system); one that has gets
 * up to 4 × `timeoutMs` to finish, so a busy machine does not cut off a
 * system that is merely slower.
 */
export const drain = async (
  system: SystemAdapter,
  instance: SystemInstance,
  observer: pg.Client,
  options: { readonly jobs: number; readonly concurrency: number; readonly timeoutMs: number; readonly statementCount: () => number }
): Promise<DrainResult> => {
  const { jobs, concurrency, timeoutMs } = options
  let started = 0
  let firstJobAt: number | null = null
  let allStarted!: () => void
  const allStartedPromise = new Promise<void>((resolve) => {
    allStarted = resolve
  })
  if (jobs === 0) allStarted()
  let probes = 1
  const initial = await system.unfinishedCount(observer)
  const statements0 = options.statementCount()
  const t0 = performance.now()
  let deadline = t0 + timeoutMs
  await instance.startWorkers({
    concurrency,
    onJob: () => {
      if (firstJobAt === null) firstJobAt = performance.now()
      started++
      if (started === jobs) allStarted()
    }
  })
  const until = async (at: number) => {
    let timer: NodeJS.Timeout | undefined
    await Promise.race([allStartedPromise, new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, at - performance.now()))))])
    clearTimeout(timer)
  }
  await until(deadline)
  if (started < jobs && started >= jobs / 2) {
    deadline = t0 + 4 * timeoutMs
    await until(deadline)
  }
  let unfinished = Number.POSITIVE_INFINITY
  let t1 = performance.now()
  for (;;) {
    probes++
    unfinished = await system.unfinishedCount(observer)
    t1 = performance.now()
    if (unfinished === 0 || t1 >= deadline) break
    await sleep(started >= jobs ? 5 : 50)
  }
  const statements = options.statementCount() - statements0
  await instance.stopWorkers()
  const completed = Math.max(0, initial - unfinished)
  const elapsedMs = t1 - t0
  return {
    jobs,
    concurrency,
    completed,
    elapsedMs,
    firstJobMs: firstJobAt === null ? null : firstJobAt - t0,
    jobsPerSec: elapsedMs > 0 ? (completed / elapsedMs) * 1000 : Number.NaN,
    cutOff: unfinished > 0,
    statements,
    probes
  }
}

/** The footnote for a drain that was cut off. */
export const cutOffNote = (timeoutMs: number, what = "rate from the jobs finished by then"): string =>
  `cut off: under half the jobs started within ${Math.round(timeoutMs / 1000)} s, or not all finished within ${Math.round((4 * timeoutMs) / 1000)} s; ${what}`

export const fmtInt = (n: number): string => Math.round(n).toLocaleString("en-US")
