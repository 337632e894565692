/**
 * Client-side statement accounting. Every system under test talks to
 * PostgreSQL through the one `pg` package in node_modules (graphile-worker,
 * pg-boss and @effect/sql-pg all resolve to it), so wrapping
 * `pg.Client.prototype.query` sees every statement any of them sends. The
 * harness's own clients are marked and left out.
 *
 * It counts statements (a fallback for pg_stat_statements, which needs
 * shared_preload_libraries) and times the statements a matcher picks out (the
 * systems' claim queries) from the call to the result; the latency probe
 * traces when each enqueue and claim statement was sent and answered.
 */
import pg from "pg"
import { performance } from "node:perf_hooks"

const HARNESS = Symbol.for("skiplock.bench.harnessClient")

/** One statement picked out by `traceStatements`: when it was handed to `pg` and when its result came back. */
export interface TracedStatement {
  readonly label: string
  readonly sentAt: number
  readonly doneAt: number
}

interface State {
  statements: number
  // Names the statements to trace (undefined: not traced).
  classify: ((text: string) => string | undefined) | undefined
  traced: Array<TracedStatement>
}

const state: State = { statements: 0, classify: undefined, traced: [] }
let installed = false

type QueryFn = (...args: Array<unknown>) => unknown

const queryText = (first: unknown): string | undefined => {
  if (typeof first === "string") return first
  if (first !== null && typeof first === "object" && "text" in first && typeof first.text === "string") return first.text
  return undefined
}

export const installInstrumentation = (): void => {
  if (installed) return
  installed = true
  const proto = pg.Client.prototype as unknown as { query: QueryFn }
  const original = proto.query
  proto.query = function (this: Record<symbol, unknown>, ...args: Array<unknown>): unknown {
    if (this[HARNESS] === true) return original.apply(this, args)
    state.statements++
    const classify = state.classify
    if (classify === undefined) return original.apply(this, args)
    const text = queryText(args[0])
    const label = text === undefined ? undefined : classify(text)
    if (label === undefined) return original.apply(this, args)
    const sentAt = performance.now()
    const traced = state.traced
    const record = () => {
      traced.push({ label, sentAt, doneAt: performance.now() })
    }
    const last = args.length - 1
    const callback = args[last]
    if (typeof callback === "function") {
      args[last] = (err: unknown, res: unknown) => {
        record()
        ;(callback as (e: unknown, r: unknown) => void)(err, res)
      }
      return original.apply(this, args)
    }
    const first = args[0] as { callback?: unknown } | undefined
    if (first !== undefined && first !== null && typeof first === "object" && typeof first.callback === "function") {
      const cb = first.callback as (e: unknown, r: unknown) => void
      first.callback = (err: unknown, res: unknown) => {
        record()
        cb(err, res)
      }
      return original.apply(this, args)
    }
    const result = original.apply(this, args)
    if (result !== null && typeof result === "object" && typeof (result as Promise<unknown>).then === "function") {
      ;(result as Promise<unknown>).then(record, record)
    }
    return result
  }
}

/** Marks a client as the harness's own: its statements are not counted. */
export const markHarness = <C extends pg.Client>(client: C): C => {
  ;(client as unknown as Record<symbol, unknown>)[HARNESS] = true
  return client
}

/** Statements sent by the systems under test since the process started. */
export const statementCount = (): number => state.statements

/** Starts tracing the statements `classify` names; returns a function that stops and hands back what was traced. */
export const traceStatements = (classify: (text: string) => string | undefined): (() => Array<TracedStatement>) => {
  state.classify = classify
  state.traced = []
  return () => {
    const traced = state.traced
    state.classify = undefined
    state.traced = []
    return traced
  }
}

/** Starts timing the statements `matcher` accepts; returns a function that stops and hands back the timings (ms). */
export const timeStatements = (matcher: (text: string) => boolean): (() => Array<number>) => {
  const stop = traceStatements((text) => (matcher(text) ? "timed" : undefined))
  return () => stop().map((statement) => statement.doneAt - statement.sentAt)
}
