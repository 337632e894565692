// Start-up waits for a database that cannot be reached yet, but stops at once when the database
// refuses the login (README, "Operations"): that does not fix itself. The `pg` client reports a
// password the server asks for and DATABASE_URL does not give without a SQLSTATE; it must stop too.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import net from "node:net"
import { waitForDatabase } from "../../src/app/Database.js"

// A server that asks for SCRAM-SHA-256 as PostgreSQL does: AuthenticationSASL ('R', length, 10, the
// mechanism, an empty name to end the list) to the startup message, then AuthenticationSASLContinue
// (11, a server-first-message) to the client's first SASL message, where `pg` wants the password.
const authentication = (code: number, body: string) => {
  const payload = Buffer.from(body)
  const message = Buffer.alloc(9 + payload.length)
  message.write("R", 0)
  message.writeInt32BE(8 + payload.length, 1)
  message.writeInt32BE(code, 5)
  payload.copy(message, 9)
  return message
}
const scramOnlyServer = () =>
  new Promise<{ readonly port: number; readonly close: () => void }>((resolve) => {
    const sockets = new Set<net.Socket>()
    const server = net.createServer((socket) => {
      sockets.add(socket)
      socket.on("error", () => {})
      let messages = 0
      socket.on("data", () => {
        messages++
        if (messages === 1) socket.write(authentication(10, "SCRAM-SHA-256\0\0"))
        if (messages === 2) socket.write(authentication(11, "r=nonce,s=c2FsdA==,i=4096"))
      })
    })
    server.listen(0, "127.0.0.1", () =>
      resolve({
        port: (server.address() as net.AddressInfo).port,
        close: () => {
          for (const socket of sockets) socket.destroy()
          server.close()
        }
      })
    )
  })

describe("waiting for the database at start-up", () => {
  it.live("stops at once, saying so, when the server asks for a password DATABASE_URL does not give", () =>
    Effect.gen(function* () {
      const server = yield* Effect.acquireRelease(Effect.promise(scramOnlyServer), (server) => Effect.sync(server.close))
      const waits: Array<string> = []
      const error = yield* waitForDatabase(`postgres://skiplock@127.0.0.1:${server.port}/test`, (detail) => Effect.sync(() => void waits.push(detail))).pipe(
        Effect.flip,
        Effect.timeout("10 seconds")
      )
      expect(error._tag).toBe("StartupError")
      expect(error.message).toContain("refused the connection: the server asks for a password and DATABASE_URL has none")
      expect(error.message).toContain("check DATABASE_URL")
      expect(waits).toEqual([])
    }).pipe(Effect.scoped))
})
