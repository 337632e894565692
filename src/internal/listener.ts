/**
 * LISTEN on the queue's channel with a dedicated connection, supervised:
 * @effect/sql-pg's own `listen` neither notices a dead connection nor
 * reconnects, so this one fails when its connection ends and is restarted
 * with backoff. A connection whose network fell silent ends nothing (no FIN,
 * no RST; TCP keepalive speaks after about 2 hours), so the connection is
 * also asked a `SELECT 1` every few seconds, and one that does not answer in
 * time counts as lost. Notifications only make workers react sooner; the
 * poll remains the safety net for any that are lost.
 *
 * Real time (Node timers), not the Effect Clock, for the liveness check, as
 * for every bound on a silent network (answerWatch.ts).
 */
import type { PgClient } from "@effect/sql-pg"
import { Data, Deferred, Duration, Effect, Redacted, Schedule } from "effect"
import pg from "pg"
import { waitAtMost } from "./bounded.js"
import { makeOutageLog } from "./outageLog.js"

export const JOBS_CHANNEL = "skiplock_jobs"
/** A payload that is no job type (a colon): followed by a worker's id, that worker's job was failed by hand (0036). */
export const LET_GO = "let-go:"
// As the pool's (Db.layer), which the PgClient config built from a pool does not carry.
const CONNECT_TIMEOUT = Duration.seconds(5)
// How often the listening connection is asked whether it is still there, and how long its answer (and
// LISTEN's) may take: a silent network is noticed within about 8 s, and the connection opened again.
const LIVENESS_INTERVAL_MILLIS = 5_000
const ANSWER_TIMEOUT_MILLIS = 3_000

class ListenConnectionLost extends Data.TaggedError("ListenConnectionLost")<{ readonly cause: unknown }> {}

const clientConfig = (config: PgClient.PgClientConfig): pg.ClientConfig => ({
  ...(config.url !== undefined ? { connectionString: Redacted.value(config.url) } : {}),
  ...(config.host !== undefined ? { host: config.host } : {}),
  ...(config.port !== undefined ? { port: config.port } : {}),
  ...(config.database !== undefined ? { database: config.database } : {}),
  ...(config.username !== undefined ? { user: config.username } : {}),
  ...(config.password !== undefined ? { password: Redacted.value(config.password) } : {}),
  ...(config.ssl !== undefined ? { ssl: config.ssl } : {}),
  application_name: `${config.applicationName ?? "skiplock"}-listen`,
  keepAlive: true,
  // A server that accepts the connection and never answers (a host going down) fails the attempt, which is retried.
  connectionTimeoutMillis: Duration.toMillis(Duration.decode(config.connectTimeout ?? CONNECT_TIMEOUT))
})

/** Connects, listens, runs `onListening`, and calls `onNotify` with each payload until the connection is lost (then fails). */
const listenOnce = (config: PgClient.PgClientConfig, onNotify: (payload: string) => void, onListening: Effect.Effect<void>) =>
  Effect.acquireUseRelease(
    // Interruptible, unlike the rest of an acquisition: a worker that stops while the database does not answer
    // must not wait out the connect. An interrupted connect ends its client (the abort signal).
    Effect.interruptible(Effect.tryPromise({
      try: async (signal) => {
        const client = new pg.Client(clientConfig(config))
        client.on("error", () => {}) // reported through the handlers below
        signal.addEventListener("abort", () => void client.end().catch(() => undefined))
        await client.connect()
        return client
      },
      catch: (cause) => new ListenConnectionLost({ cause })
    })),
    (client) =>
      Effect.gen(function* () {
        const lost = yield* Deferred.make<never, ListenConnectionLost>()
        const onLost = (cause: unknown) => Deferred.unsafeDone(lost, Effect.fail(new ListenConnectionLost({ cause })))
        const onEnd = () => onLost("connection ended")
        const onNotification = (message: pg.Notification) => {
          if (message.channel === JOBS_CHANNEL) onNotify(message.payload ?? "")
        }
        client.on("notification", onNotification)
        client.once("end", onEnd)
        client.once("error", onLost)
        // A statement on this connection that gets no answer in time: the connection is taken for lost.
        const answered = (text: string) => {
          const silent = setTimeout(() => onLost(`no answer to ${text} within ${ANSWER_TIMEOUT_MILLIS} ms`), ANSWER_TIMEOUT_MILLIS)
          return client.query(text).finally(() => clearTimeout(silent))
        }
        let liveness: ReturnType<typeof setInterval> | undefined
        const listen = Effect.tryPromise({
          try: () => answered(`LISTEN ${JOBS_CHANNEL}`),
          catch: (cause) => new ListenConnectionLost({ cause })
        }).pipe(Effect.zipRight(Effect.sync(() => {
          liveness = setInterval(() => void answered("SELECT 1").catch(onLost), LIVENESS_INTERVAL_MILLIS)
          liveness.unref()
        })))
        return yield* Effect.raceFirst(Effect.zipRight(listen, onListening), Deferred.await(lost)).pipe(
          Effect.zipRight(Deferred.await(lost)),
          Effect.ensuring(Effect.sync(() => {
            clearInterval(liveness)
            client.off("notification", onNotification)
            client.off("end", onEnd)
            client.off("error", onLost)
          }))
        )
      }),
    // Bounded, and in a fresh fiber: the worker's fiber is usually being interrupted when this runs. A silent
    // connection never confirms its end: its socket is closed then, not left open until TCP gives up.
    (client) =>
      waitAtMost(Effect.promise(() => client.end().catch(() => undefined)), "1 second").pipe(
        Effect.zipRight(Effect.sync(() => (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy()))
      )
  )

/** Listens forever, reconnecting with backoff (100 ms doubling, at most 5 s) after each loss. */
export const listenForJobs = (config: PgClient.PgClientConfig, onNotify: (payload: string) => void) =>
  Effect.suspend(() => {
    const outage = makeOutageLog("LISTEN connection")
    // Jobs may have arrived while we were not listening.
    const listening = Effect.zipRight(outage.succeeded, Effect.sync(() => onNotify("")))
    return listenOnce(config, onNotify, listening).pipe(
      Effect.tapError((error) => outage.failed(error.cause)),
      Effect.retry(Schedule.exponential("100 millis").pipe(Schedule.union(Schedule.spaced("5 seconds")))),
      Effect.orDie
    )
  })
