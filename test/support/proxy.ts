// A TCP proxy in front of a test database, to make it go away as a host or a network would.
import { Effect } from "effect"
import { createConnection, createServer, type Socket } from "node:net"

/**
 * A TCP proxy to the database of `url`, whose `url` the service is given; `silence()` makes it stop
 * forwarding in both directions and leave new connections unanswered, as a host that went away would;
 * `heal()` forwards new connections again, while the ones open at the silence stay silent for good (as
 * after a failover behind a firewall that forgot them); `close()` ends every connection and refuses new
 * ones, as a database that went down would.
 */
export const silenceableProxy = (url: string) =>
  Effect.acquireRelease(
    Effect.async<{ readonly url: string; readonly silence: () => void; readonly heal: () => void; readonly close: () => void }>((resume) => {
      const target = new URL(url)
      let silent = false
      // Each connection's own: set for good by a silence.
      const connections = new Set<{ silent: boolean }>()
      const sockets = new Set<Socket>()
      const server = createServer((client) => {
        sockets.add(client)
        client.on("error", () => client.destroy())
        if (silent) return
        const connection = { silent: false }
        connections.add(connection)
        const upstream = createConnection({ host: target.hostname, port: Number(target.port || 5432) })
        sockets.add(upstream)
        upstream.on("error", () => client.destroy())
        client.on("data", (chunk) => void (connection.silent || upstream.write(chunk)))
        upstream.on("data", (chunk) => void (connection.silent || client.write(chunk)))
        client.on("close", () => upstream.destroy())
        upstream.on("close", () => client.destroy())
      })
      server.listen(0, "127.0.0.1", () => {
        const proxied = new URL(url)
        proxied.hostname = "127.0.0.1"
        proxied.port = String((server.address() as { port: number }).port)
        const silence = () => {
          silent = true
          for (const connection of connections) connection.silent = true
        }
        const close = () => {
          for (const socket of sockets) socket.destroy()
          server.close()
        }
        resume(Effect.succeed({ url: proxied.toString(), silence, heal: () => void (silent = false), close }))
      })
    }),
    (proxy) => Effect.sync(proxy.close)
  )

/**
 * A TCP proxy to the database of `url` that can go down and come back, as a database restarting does:
 * `down()` ends every connection and refuses new ones (closed at once), `up()` forwards again.
 */
export const restartableProxy = (url: string) =>
  Effect.acquireRelease(
    Effect.async<{ readonly url: string; readonly down: () => void; readonly up: () => void; readonly close: () => void }>((resume) => {
      const target = new URL(url)
      let isDown = false
      const sockets = new Set<Socket>()
      const server = createServer((client) => {
        client.on("error", () => client.destroy())
        if (isDown) return void client.destroy()
        sockets.add(client)
        const upstream = createConnection({ host: target.hostname, port: Number(target.port || 5432) })
        sockets.add(upstream)
        upstream.on("error", () => client.destroy())
        client.pipe(upstream)
        upstream.pipe(client)
        client.on("close", () => (upstream.destroy(), sockets.delete(client)))
        upstream.on("close", () => (client.destroy(), sockets.delete(upstream)))
      })
      server.listen(0, "127.0.0.1", () => {
        const proxied = new URL(url)
        proxied.hostname = "127.0.0.1"
        proxied.port = String((server.address() as { port: number }).port)
        const down = () => {
          isDown = true
          for (const socket of sockets) socket.destroy()
        }
        const close = () => {
          down()
          server.close()
        }
        resume(Effect.succeed({ url: proxied.toString(), down, up: () => void (isDown = false), close }))
      })
    }),
    (proxy) => Effect.sync(proxy.close)
  )

/**
 * A TCP proxy to the database of `url` whose first connection goes through at once and every later one
 * only after `delayMillis` (as a DNS lookup, a handshake over a WAN or a lost SYN take): a CancelRequest,
 * sent on a connection of its own, arrives that much later.
 */
export const slowToConnectProxy = (url: string, delayMillis: number) =>
  Effect.acquireRelease(
    Effect.async<{ readonly url: string; readonly close: () => void }>((resume) => {
      const target = new URL(url)
      const sockets = new Set<Socket>()
      let connections = 0
      const server = createServer((client) => {
        sockets.add(client)
        client.on("error", () => client.destroy())
        // Held until the upstream connection is there.
        const early: Array<Buffer> = []
        const hold = (chunk: Buffer) => void early.push(chunk)
        client.on("data", hold)
        setTimeout(() => {
          const upstream = createConnection({ host: target.hostname, port: Number(target.port || 5432) }, () => {
            client.off("data", hold)
            for (const chunk of early) upstream.write(chunk)
            client.pipe(upstream)
            upstream.pipe(client)
          })
          sockets.add(upstream)
          upstream.on("error", () => client.destroy())
          client.on("close", () => upstream.destroy())
          upstream.on("close", () => client.destroy())
        }, connections++ === 0 ? 0 : delayMillis)
      })
      server.listen(0, "127.0.0.1", () => {
        const proxied = new URL(url)
        proxied.hostname = "127.0.0.1"
        proxied.port = String((server.address() as { port: number }).port)
        const close = () => {
          for (const socket of sockets) socket.destroy()
          server.close()
        }
        resume(Effect.succeed({ url: proxied.toString(), close }))
      })
    }),
    (proxy) => Effect.sync(proxy.close)
  )
