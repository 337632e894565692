/**
 * A bound on how long the worker's own bookkeeping statements (claims, completions, heartbeats,
 * rescues, registration: the ones marked WATCHED) may go unanswered. A connection whose network fell
 * silent (a failover behind a firewall that forgot the connection: no reset, no answer) would hold
 * such a statement, and with it the claim loop, until TCP gives up (~15 minutes).
 *
 * Past the timeout the statement is cancelled as psql's Ctrl-C does it, with a CancelRequest on a new
 * connection: a server that is there ends it at once (SQLSTATE 57014), and the connection is closed
 * (retired from the pool) all the same: that 57014 may be another's (a statement_timeout, an operator's
 * pg_cancel_backend) while this cancel is still on its way.
 * Without an answer within the grace after that either, the connection is closed: the statement
 * fails as a lost connection, and the pool opens a new one. Cancelling first keeps a statement the
 * server is still running from committing after its caller gave up on it (a claim whose jobs
 * nobody would start). Any answer that comes after the cancel was sent retires the connection: the
 * cancel may still be on its way, and would end whatever statement the connection runs next (a
 * handler's, say), as a Ctrl-C crossing the answer does in psql.
 *
 * Real time (Node timers), not the Effect Clock: how long a network stays silent is not the queue's
 * time. One timer a statement, started and cleared in node-postgres's callback, and no fiber.
 */
import { createConnection } from "node:net"
import type pg from "pg"

/** What a watch needs of a pg Client (public in node-postgres, not all in its types). */
interface WatchedClient {
  readonly host: string
  readonly port: number
  readonly processID: number | null
  readonly secretKey: number | null
  readonly connection: { readonly stream: { destroy(): void } }
}

// The CancelRequest message: length 16, the cancel code 80877102, the backend's process id and secret key.
const cancelRequest = (processID: number, secretKey: number) => {
  const message = Buffer.alloc(16)
  message.writeInt32BE(16, 0)
  message.writeInt32BE(80877102, 4)
  message.writeInt32BE(processID, 8)
  message.writeInt32BE(secretKey, 12)
  return message
}

/**
 * Sends a CancelRequest for the statement `client` runs, on a connection of its own, which the server
 * closes once read; a host that does not answer gets the grace, then the socket is dropped. Failures are
 * ignored: closing the statement's connection follows. `settled` is called once, when the cancel's
 * connection has closed (read, or refused) or its grace ran out.
 */
export const sendCancel = (client: pg.Client, graceMillis: number, settled: () => void = () => undefined): void => {
  const watched = client as unknown as WatchedClient
  if (watched.processID === null || watched.secretKey === null) return settled()
  const message = cancelRequest(watched.processID, watched.secretKey)
  const socket = watched.host.startsWith("/")
    ? createConnection(`${watched.host}/.s.PGSQL.${watched.port}`)
    : createConnection({ host: watched.host, port: watched.port })
  socket.on("error", () => socket.destroy())
  socket.on("connect", () => socket.end(message))
  socket.once("close", settled)
  socket.setTimeout(graceMillis, () => socket.destroy())
  socket.unref()
}

/**
 * Watches one statement sent on `client`: returns the function to call when its answer arrives, which
 * says whether the connection must be retired (a cancel was sent). Unanswered after `timeoutMillis` it is
 * cancelled; after `graceMillis` more, the connection is closed.
 */
export const watchAnswer = (client: pg.Client, timeoutMillis: number, graceMillis: number): (() => boolean) => {
  const watched = client as unknown as WatchedClient
  let grace: NodeJS.Timeout | undefined
  const timer = setTimeout(() => {
    sendCancel(client, graceMillis)
    grace = setTimeout(() => watched.connection.stream.destroy(), graceMillis)
    grace.unref()
  }, timeoutMillis)
  timer.unref()
  return () => {
    clearTimeout(timer)
    if (grace === undefined) return false
    clearTimeout(grace)
    // Whatever the answer: even a 57014 may be another's (a pg_cancel_backend, a statement_timeout) while this
    // cancel is still on its way, and nothing here tells when it has landed (a proxy may close the cancel's
    // socket before passing it on), so the connection is not used again.
    return true
  }
}
