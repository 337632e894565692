// Db.layer's first connection against a server that lets the client log in and then never answers a
// statement (a pooler with no server connection free): the start fails after the connect timeout,
// closes that connection, and can be interrupted while it waits.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer } from "effect"
import { createServer, type Socket } from "node:net"
import { Db } from "../../src/index.js"
import { eventually } from "../support/live.js"

const message = (type: string, body: Buffer) => {
  const head = Buffer.alloc(5)
  head.write(type)
  head.writeInt32BE(body.length + 4, 1)
  return Buffer.concat([head, body])
}

/** Answers the startup message with "authenticated, ready", then swallows everything. */
const mutePooler = Effect.acquireRelease(
  Effect.async<{ readonly url: string; readonly open: () => number; readonly close: () => void }>((resume) => {
    const sockets = new Set<Socket>()
    const server = createServer((socket) => {
      sockets.add(socket)
      socket.on("close", () => sockets.delete(socket))
      socket.once("data", () => socket.write(Buffer.concat([message("R", Buffer.alloc(4)), message("Z", Buffer.from("I"))])))
    })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number }
      const close = () => {
        for (const socket of sockets) socket.destroy()
        server.close()
      }
      resume(Effect.succeed({ url: `postgres://skiplock@127.0.0.1:${port}/skiplock`, open: () => sockets.size, close }))
    })
  }),
  (server) => Effect.sync(server.close)
)

describe("Db.layer start", () => {
  it.live("fails after the connect timeout when the server never answers its first statement, and closes that connection", () =>
    Effect.gen(function* () {
      const server = yield* mutePooler
      const started = Date.now()
      const exit = yield* Effect.exit(Effect.scoped(Layer.build(Db.layer({ url: server.url, connectTimeout: "500 millis" }))))
      expect(Date.now() - started).toBeLessThan(1500)
      expect(Exit.isFailure(exit) && String(exit.cause)).toMatch(/SqlError/)
      yield* eventually(Effect.sync(() => server.open() === 0), "the unanswered connection is closed", "2 seconds")
    }).pipe(Effect.scoped))

  it.live("stops at once when interrupted while it waits for the first answer", () =>
    Effect.gen(function* () {
      const server = yield* mutePooler
      const building = yield* Effect.fork(Effect.scoped(Layer.build(Db.layer({ url: server.url, connectTimeout: "10 seconds" }))))
      yield* eventually(Effect.sync(() => server.open() === 1), "the first connection is open", "2 seconds")
      yield* Effect.sleep("200 millis")
      const stopping = Date.now()
      yield* Fiber.interrupt(building)
      expect(Date.now() - stopping).toBeLessThan(1500)
    }).pipe(Effect.scoped))
})
