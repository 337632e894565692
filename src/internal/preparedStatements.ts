/**
 * Named prepared statements for skiplock's own statements. @effect/sql-pg
 * sends every statement unnamed, so the server parses and plans it on every
 * call; a statement whose text begins with PREPARED is sent under a name
 * instead, which node-postgres parses once per connection and then only
 * executes (in a drain the server spent 8–14 % less CPU a job:
 * docs/PERFORMANCE.md). Only skiplock's fixed job-path statements carry the
 * mark: their texts never vary and they select named columns.
 *
 * A migration that changes the columns a prepared statement returns makes the
 * server refuse it ("cached plan must not change result type") on every
 * connection that prepared it. Such a statement gets a new name on that
 * connection and, outside a transaction, is sent again at once; inside one
 * the error stands (the transaction is already aborted) and the next call
 * prepares it anew.
 *
 * The worker's bookkeeping statements carry the WATCHED mark instead: prepared as well, and answered
 * within the pool's answer timeout or given up (answerWatch.ts). The client does both; a pool whose
 * connections must not prepare (`preparedStatements: false`) still watches.
 */
import { Duration } from "effect"
import pg from "pg"
import { watchAnswer } from "./answerWatch.js"
import { typeParsers } from "./infiniteTimestamps.js"

/** The mark a statement's text begins with to be prepared. */
export const PREPARED = "/* skiplock:prepared */"
/** The mark of a prepared statement that must be answered within the answer timeout (see answerWatch.ts). */
export const WATCHED = "/* skiplock:prepared, watched */"

/** What the client takes from the pool's options (pg.Pool hands its options to each Client it makes). */
export interface ClientOptions {
  /** pg's type parsers for the client (infiniteTimestamps.ts). */
  readonly types: typeof typeParsers
  /** Send marked statements as named prepared statements (default true). */
  readonly skiplockPrepare?: boolean
  /** How long a WATCHED statement may go unanswered before it is cancelled (ms; default 30 s). */
  readonly skiplockAnswerTimeoutMillis?: number
}

/** The answer timeout unless told otherwise: the worker's statements answer in milliseconds. */
export const DEFAULT_ANSWER_TIMEOUT = Duration.seconds(30)
/** The answer timeouts a pool takes (Db.layer's `answerTimeout`, DATABASE_ANSWER_TIMEOUT): at 0 every statement would be cancelled. */
export const ANSWER_TIMEOUT_RANGE = { min: Duration.millis(100), max: Duration.hours(1) } as const
// After the cancel, how long an answer may take before the connection is closed: a server that is there answers a cancel at once.
const CANCEL_GRACE_MILLIS = 2_000

/** What a pool hands each of its clients, from the pool's settings (Db.DbOptions). */
export const clientOptions = (options: { readonly preparedStatements?: boolean; readonly answerTimeout?: Duration.DurationInput }): ClientOptions => ({
  types: typeParsers,
  skiplockPrepare: options.preparedStatements !== false,
  skiplockAnswerTimeoutMillis: Duration.toMillis(options.answerTimeout ?? DEFAULT_ANSWER_TIMEOUT)
})

const isMarked = (text: string) => text.startsWith(PREPARED) || text.startsWith(WATCHED)

// Names are shared by all connections (each prepares its own); past this many texts the rest go unnamed.
const MAX_TEXTS = 100
const names = new Map<string, string>()

const nameFor = (text: string): string | undefined => {
  let name = names.get(text)
  if (name === undefined && names.size < MAX_TEXTS) {
    name = `skiplock_${names.size + 1}`
    names.set(text, name)
  }
  return name
}

const isStalePlan = (error: unknown) =>
  (error as { code?: unknown } | null)?.code === "0A000" && /cached plan must not change result type/.test(String((error as Error).message))

type Callback = (error: Error | null, result: unknown) => void

/**
 * A `pg` Client (for `pg.Pool`'s `Client` option, configured by ClientOptions among the pool's options) that
 * sends marked statements as named prepared statements, and watches the answers of the WATCHED ones.
 */
export class PreparingClient extends pg.Client {
  // A statement refused as stale gets a fresh name on this connection; the old one is left to the connection's end.
  private readonly renamed = new Map<string, string>()
  private renames = 0
  private readonly prepare: boolean
  private readonly answerTimeoutMillis: number

  constructor(config?: pg.ClientConfig & ClientOptions) {
    super(config)
    this.prepare = config?.skiplockPrepare !== false
    this.answerTimeoutMillis = config?.skiplockAnswerTimeoutMillis ?? Duration.toMillis(DEFAULT_ANSWER_TIMEOUT)
  }

  // pg's query is overloaded (text, config object, cursor, promise or callback); every other form passes through.
  override query(config: any, values?: any, callback?: any): any {
    if (typeof config !== "string" || typeof callback !== "function" || !isMarked(config)) return super.query(config, values, callback)
    const text: string = config
    const name = this.prepare ? nameFor(text) : undefined
    const answered = text.startsWith(WATCHED) ? watchAnswer(this, this.answerTimeoutMillis, Math.min(CANCEL_GRACE_MILLIS, this.answerTimeoutMillis)) : undefined
    const done: Callback = (error, result) => {
      if (answered?.() === true) this.retire()
      ;(callback as Callback)(error, result)
    }
    if (name === undefined) return super.query(text, values, done)
    const send = (retried: boolean): void => {
      const current = this.renamed.get(text) ?? name
      super.query({ name: current, text, values }, (error: Error | null, result: unknown) => {
        if (error !== null && isStalePlan(error)) {
          this.renamed.set(text, `${name}_${++this.renames}`)
          if (!retried && this.transactionStatus() === "I") return send(true)
        }
        done(error, result)
      })
    }
    send(false)
  }

  // Marks the connection as not to be used again: pg-pool, given it back, closes it instead of keeping it
  // (it checks this flag of node-postgres's; set before the caller sees the answer and releases the client).
  private retire(): void {
    ;(this as unknown as { _queryable: boolean })._queryable = false
  }

  // node-postgres tracks it from ReadyForQuery ("I" idle, "T" in a transaction, "E" in a failed one); @types/pg lacks it.
  private transactionStatus(): string | null {
    return (this as unknown as { getTransactionStatus(): string | null }).getTransactionStatus()
  }
}
