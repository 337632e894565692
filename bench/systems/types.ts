/**
 * The one interface every system under test implements. A system is
 * installed into a fresh database, then opened (producer + connection pool),
 * and workers are started and stopped on the open instance.
 */
import type pg from "pg"
import type { ScenarioName } from "../config.js"

/** Every benchmark job carries this payload; `i` identifies latency samples. */
export interface BenchPayload {
  readonly i: number
}

export interface WorkerStart {
  readonly concurrency: number
  /** Called by the no-op handler when a job starts, with the job's payload. */
  readonly onJob: (payload: BenchPayload) => void
}

export interface OpenOptions {
  /** Connection pool size for the instance (the same for every system in a run). */
  readonly poolSize: number
}

export interface SystemInstance {
  enqueueOne(payload: BenchPayload): Promise<void>
  enqueueBatch(payloads: ReadonlyArray<BenchPayload>): Promise<void>
  startWorkers(options: WorkerStart): Promise<void>
  /** Stops the workers; jobs still queued stay queued. */
  stopWorkers(): Promise<void>
  /** Stops everything and closes every connection the instance opened. */
  close(): Promise<void>
}

export interface SystemAdapter {
  /** Stable id used in flags and JSON, e.g. `pg-boss-tuned`. */
  readonly id: string
  /** Column header. */
  readonly label: string
  readonly packageName: string
  /** How the system is configured in this benchmark, for the report. */
  readonly configuration: string
  /** What a processed job leaves in the database, for the report. */
  readonly recordsPerJob: string
  /**
   * The longest idle wait before a worker notices a new job, when the system
   * only polls (no LISTEN/NOTIFY). The latency scenario spaces samples by a
   * random delay up to this, so enqueues land at random points of the poll
   * cycle instead of right after one. 0 for systems woken by NOTIFY.
   */
  readonly idlePollMs: number
  /** A skiplock variant whose ratio to each peer the report shows beside skiplock's. */
  readonly comparedWithPeers?: boolean
  /** Runs in these scenarios only (a variant that differs from another system only there); default: all. */
  readonly onlyScenarios?: ReadonlyArray<ScenarioName>
  /** The installed version, or why the system cannot run here. */
  probe(): Promise<{ readonly ok: true; readonly version: string } | { readonly ok: false; readonly reason: string }>
  /** Creates the system's schema in an empty database. */
  install(url: string): Promise<void>
  open(url: string, options: OpenOptions): Promise<SystemInstance>
  /** Jobs neither completed nor failed (queued, running, waiting for retry). */
  unfinishedCount(client: pg.Client): Promise<number>
  /** Deletes unfinished jobs (left by a drain that was cut off), so a reused database starts clean. */
  discardUnfinished(client: pg.Client): Promise<void>
  /**
   * Adds `rows` finished jobs with one INSERT … SELECT generate_series, the
   * way the system keeps them after processing, then VACUUM ANALYZEs.
   */
  seedHistory(client: pg.Client, rows: number): Promise<void>
  /** Recognises the statement that claims jobs, for timing it. */
  isClaimQuery(text: string): boolean
}
