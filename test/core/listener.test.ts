// The LISTEN connection against a server that accepts connections and never
// answers (a database host going down): each connect gives up after the
// connect timeout and is tried again, and stopping the listener does not wait
// for a connect on its way. And one whose network falls silent while it
// listens (a failover behind a firewall that forgot the connection) is
// noticed by its liveness check and opened again (found by a review: it
// waited for TCP keepalive, about 2 hours, without notifications).
import { SqlClient } from "@effect/sql"
import { describe, expect, it, layer } from "@effect/vitest"
import { Effect, Fiber, Redacted } from "effect"
import { createServer, type Socket } from "node:net"
import { listenForJobs } from "../../src/internal/listener.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { eventually, pauseLive } from "../support/live.js"
import { silenceableProxy } from "../support/proxy.js"

/** A TCP server that accepts connections and never says a word. */
const silentServer = Effect.acquireRelease(
  Effect.async<{ readonly port: number; readonly connections: () => number; readonly close: () => void }>((resume) => {
    const sockets: Array<Socket> = []
    const server = createServer((socket) => void sockets.push(socket))
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      if (address === null || typeof address === "string") return resume(Effect.dieMessage("the server has no TCP address"))
      const close = () => {
        for (const socket of sockets) socket.destroy()
        server.close()
      }
      resume(Effect.succeed({ port: address.port, connections: () => sockets.length, close }))
    })
  }),
  (server) => Effect.sync(server.close)
)

describe("LISTEN connection", () => {
  it.live("gives up a connect the server never answers after the connect timeout, tries again, and stops at once", () =>
    Effect.gen(function* () {
      const server = yield* silentServer
      const config = { host: "127.0.0.1", port: server.port, database: "skiplock", username: "skiplock", connectTimeout: "1 second" } as const
      const listener = yield* Effect.fork(listenForJobs(config, () => {}))
      // Its first connect gave up after a second; interrupted while the second waits for an answer.
      yield* eventually(Effect.sync(() => server.connections() >= 2), "the listener connected a second time", "5 seconds")
      const stopping = Date.now()
      yield* Fiber.interrupt(listener)
      expect(Date.now() - stopping).toBeLessThan(500)
    }).pipe(Effect.scoped))
})

describe("LISTEN connection, silent network", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    // Its statements and 'end'/'error' events say nothing then (no FIN, no RST): the liveness check notices.
    it.scoped("after the network fell silent, reconnects once the database can be reached again, and delivers notifications", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        const proxy = yield* silenceableProxy(url)
        const payloads: Array<string> = []
        const listener = yield* Effect.fork(listenForJobs({ url: Redacted.make(proxy.url), connectTimeout: "1 second" }, (p) => void payloads.push(p)))
        // Listening: its first "look" (payload "") comes once LISTEN was answered.
        yield* eventually(Effect.sync(() => payloads.includes("")), "the listener is listening")
        yield* sql`SELECT pg_notify('skiplock_jobs', 'before')`
        yield* eventually(Effect.sync(() => payloads.includes("before")), "a notification arrives before the silence")

        // The network falls silent, then new connections get through again (the old one stays silent).
        proxy.silence()
        yield* pauseLive("1 second")
        proxy.heal()

        // Within 20 s (two heartbeat intervals; the heartbeat gives up a silent try after 2 s) a new
        // LISTEN connection should be up and deliver notifications again.
        const deadline = Date.now() + 20_000
        while (!payloads.includes("after") && Date.now() < deadline) {
          yield* sql`SELECT pg_notify('skiplock_jobs', 'after')`
          yield* pauseLive("500 millis")
        }
        yield* Fiber.interrupt(listener)
        expect(payloads, "no notification reached the listener in the 20 s after the network healed").toContain("after")
      }), 40_000)
  })
})
