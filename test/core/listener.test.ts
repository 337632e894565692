// The LISTEN connection against a server that accepts connections and never
// answers (a database host going down): each connect gives up after the
// connect timeout and is tried again, and stopping the listener does not wait
// for a connect on its way.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { createServer, type Socket } from "node:net"
import { listenForJobs } from "../../src/internal/listener.js"
import { eventually } from "../support/live.js"

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
