/**
 * skiplock's own job-path statements, sent straight to a connection of the
 * pool instead of through @effect/sql's execution. The statement is still
 * built and compiled by @effect/sql (same text, same parameters); what is left
 * out is the machinery around running it (a span, a scope, the connection's
 * acquirer): 22 KB of allocations and 65–80 µs of CPU a statement here
 * (docs/PERFORMANCE.md, "Statements outside @effect/sql").
 *
 * Failures are @effect/sql-pg's: an SqlError with its messages ("Failed to
 * acquire connection", "Connection error", "Failed to execute statement"), so
 * connectionLoss.ts reads them alike. An interrupted statement is cancelled
 * with a CancelRequest on a socket of its own, and its connection closed, not
 * given back: a cancel sent through the pool (as @effect/sql-pg sends its
 * pg_cancel_backend) waited behind busy connections, and landed late, on the
 * next statement of a connection given back meanwhile (found by a review).
 *
 * Only for a pool that Db.layer built (it provides DbPool), and only outside a
 * transaction: a statement inside one must run on the transaction's
 * connection, so it goes through @effect/sql.
 */
import { SqlClient, type Statement } from "@effect/sql"
import { SqlError } from "@effect/sql/SqlError"
import { Context, Effect, Option } from "effect"
import type pg from "pg"
import { sendCancel } from "./answerWatch.js"

/** The pg pool behind Db.layer's PgClient. */
export class DbPool extends Context.Tag("skiplock/DbPool")<DbPool, pg.Pool>() {}

// How long an interrupted statement's cancel may take to be delivered: best effort, bounded.
const CANCEL_GRACE_MILLIS = 5_000

// Sends the cancel and waits until the server has read it (or it failed, or its grace passed).
const cancel = (client: pg.PoolClient) =>
  Effect.async<void>((resume) => void sendCancel(client, CANCEL_GRACE_MILLIS, () => resume(Effect.void)))

// Given to pg-pool with the connection of an interrupted statement: it closes the connection instead of keeping it.
const INTERRUPTED = new Error("its statement was interrupted and cancelled")

/** Runs a compiled statement on a connection of the pool; the rows, as @effect/sql-pg returns them. */
const runOnPool = <A>(pool: pg.Pool, text: string, params: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<A>, SqlError> =>
  Effect.async<ReadonlyArray<A>, SqlError>((resume) => {
    let done = false
    let cancelSent = false
    let client: pg.PoolClient | undefined
    const finish = (error?: Error) => {
      if (done) return
      done = true
      client?.off("error", onError)
      client?.release(error)
    }
    const onError = (cause: Error) => {
      finish(cause)
      resume(Effect.fail(new SqlError({ cause, message: "Connection error" })))
    }
    pool.connect((cause, acquired) => {
      if (cause) return resume(Effect.fail(new SqlError({ cause, message: "Failed to acquire connection" })))
      if (acquired === undefined) {
        return resume(Effect.fail(new SqlError({ cause: new Error("No client returned"), message: "Failed to acquire connection" })))
      }
      if (done) return acquired.release() // interrupted while waiting for it
      client = acquired
      client.once("error", onError)
      client.query(text, params as Array<unknown>, (error: Error | null, result: pg.QueryResult) => {
        if (done) return
        finish(cancelSent ? INTERRUPTED : undefined)
        resume(error === null ? Effect.succeed(result.rows as Array<A>) : Effect.fail(new SqlError({ cause: error, message: "Failed to execute statement" })))
      })
    })
    return Effect.suspend(() => {
      if (done) return Effect.void
      if (client === undefined) {
        done = true // the connection, once it comes, goes straight back
        return Effect.void
      }
      // Closed rather than given back, whenever its answer comes: whether the cancel has landed by then is not
      // known here (even a 57014 may be another's).
      cancelSent = true
      return Effect.ensuring(cancel(client), Effect.sync(() => finish(INTERRUPTED)))
    })
  })

/**
 * Runs `statement` on the pool directly when there is one and no transaction is open; otherwise as
 * @effect/sql runs it. Made once per store: the pool does not change.
 */
export const make = Effect.map(Effect.serviceOption(DbPool), (pool) => {
  if (Option.isNone(pool)) return <A extends object>(statement: Statement.Statement<A>): Effect.Effect<ReadonlyArray<A>, SqlError> => statement
  return <A extends object>(statement: Statement.Statement<A>): Effect.Effect<ReadonlyArray<A>, SqlError> =>
    Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (transaction) => {
      if (Option.isSome(transaction)) return statement
      const [text, params] = statement.compile()
      return runOnPool<A>(pool.value, text, params)
    })
})
