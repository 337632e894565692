// The HTTP server closes last on a stop, and Node's close waits for every open connection to end:
// a client that keeps its connection busy must not hold the stop open (README, "Stopping").
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Scope } from "effect"
import net from "node:net"
import { ServiceState } from "../../src/app/ServiceState.js"
import * as Http from "../../src/http/server.js"

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const probe = net.createServer()
    probe.once("error", reject)
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as net.AddressInfo
      probe.close(() => resolve(port))
    })
  })

const connect = (port: number) =>
  new Promise<net.Socket>((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => resolve(socket))
    socket.once("error", reject)
  })

describe("the HTTP server's close", () => {
  it.live("cuts a connection still busy a second after the stop, instead of waiting for its client", () =>
    Effect.gen(function* () {
      const port = yield* Effect.promise(freePort)
      const scope = yield* Scope.make()
      yield* Layer.buildWithScope(Http.layer({ host: "127.0.0.1", port }).pipe(Layer.provide(ServiceState.layer)), scope)

      // A request half sent: to the server the connection is busy until its client sends the rest
      // (Node's own headers timeout would end it after a minute).
      const socket = yield* Effect.promise(() => connect(port))
      const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()))
      socket.on("error", () => {})
      socket.write("GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
      yield* Effect.sleep("100 millis")

      const stoppedAt = Date.now()
      yield* Scope.close(scope, Exit.void)
      const took = Date.now() - stoppedAt
      expect(took).toBeGreaterThanOrEqual(900)
      expect(took).toBeLessThan(5_000)
      yield* Effect.promise(() => closed)
    }), 20_000)
})
