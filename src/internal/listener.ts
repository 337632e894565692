/**
 * LISTEN on the queue's channel with a dedicated connection, supervised:
 * @effect/sql-pg's own `listen` neither notices a dead connection nor
 * reconnects, so this one fails when its connection ends and is restarted
 * with backoff. Notifications only make workers react sooner; the poll
 * remains the safety net for any that are lost.
 */
import type { PgClient } from "@effect/sql-pg"
import { Data, Effect, Redacted, Schedule } from "effect"
import pg from "pg"
import { waitAtMost } from "./bounded.js"

export const JOBS_CHANNEL = "skiplock_jobs"

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
  keepAlive: true
})

/** Connects, listens, and calls `onNotify` with each payload until the connection is lost (then fails). */
const listenOnce = (config: PgClient.PgClientConfig, onNotify: (payload: string) => void, onListening: () => void) =>
  Effect.acquireUseRelease(
    Effect.tryPromise({
      try: async () => {
        const client = new pg.Client(clientConfig(config))
        client.on("error", () => {}) // reported through the 'end' handler below
        await client.connect()
        return client
      },
      catch: (cause) => new ListenConnectionLost({ cause })
    }),
    (client) =>
      Effect.async<never, ListenConnectionLost>((resume) => {
        const onNotification = (message: pg.Notification) => {
          if (message.channel === JOBS_CHANNEL) onNotify(message.payload ?? "")
        }
        const onEnd = () => resume(Effect.fail(new ListenConnectionLost({ cause: "connection ended" })))
        const onError = (cause: unknown) => resume(Effect.fail(new ListenConnectionLost({ cause })))
        client.on("notification", onNotification)
        client.once("end", onEnd)
        client.once("error", onError)
        client.query(`LISTEN ${JOBS_CHANNEL}`).then(onListening, onError)
        return Effect.sync(() => {
          client.off("notification", onNotification)
          client.off("end", onEnd)
          client.off("error", onError)
        })
      }),
    // Bounded, and in a fresh fiber: the worker's fiber is usually being interrupted when this runs.
    (client) => waitAtMost(Effect.promise(() => client.end().catch(() => undefined)), "1 second")
  )

/** Listens forever, reconnecting with backoff (100 ms doubling, at most 5 s) after each loss. */
export const listenForJobs = (config: PgClient.PgClientConfig, onNotify: (payload: string) => void) =>
  Effect.suspend(() => {
    let failures = 0
    return listenOnce(config, onNotify, () => {
      failures = 0
      onNotify("") // jobs may have arrived while we were not listening
    }).pipe(
      Effect.tapError((error) =>
        Effect.suspend(() => {
          failures++
          return failures === 1 || failures % 20 === 0
            ? Effect.logWarning(`LISTEN connection lost (${failures} time(s) in a row); reconnecting`, error.cause)
            : Effect.void
        })
      ),
      Effect.retry(Schedule.exponential("100 millis").pipe(Schedule.union(Schedule.spaced("5 seconds")))),
      Effect.orDie
    )
  })
