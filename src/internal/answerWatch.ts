/**
 * A bound on how long the worker's own bookkeeping statements (claims, completions, heartbeats,
 * rescues, registration: the ones marked WATCHED) may go unanswered. A connection whose network fell
 * silent (a failover behind a firewall that forgot the connection: no reset, no answer) would hold
 * such a statement, and with it the claim loop, until TCP gives up (~15 minutes).
 *
 * Past the timeout the statement is cancelled as psql's Ctrl-C does it, with a CancelRequest on a new
 * connection: a server that is there ends it at once (SQLSTATE 57014) and the connection stays usable.
 * Without an answer within the grace after that either, the connection is closed: the statement
 * fails as a lost connection, and the pool opens a new one. Cancelling first keeps a statement the
 * server is still running from committing after its caller gave up on it (a claim whose jobs
 * nobody would start). An answer that comes after the cancel was sent, other than the cancel's own
 * error, retires the connection: the cancel may still be on its way, and would end whatever statement
 * the connection runs next (a handler's, say), as a Ctrl-C crossing the answer does in psql.
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

// Sends the cancel on a connection of its own, which the server closes once read; a host that does not
// answer gets the grace, then the socket is dropped. Failures are ignored: closing the connection follows.
const sendCancel = (client: WatchedClient, graceMillis: number) => {
  if (client.processID === null || client.secretKey === null) return
  const message = cancelRequest(client.processID, client.secretKey)
  const socket = client.host.startsWith("/")
    ? createConnection(`${client.host}/.s.PGSQL.${client.port}`)
    : createConnection({ host: client.host, port: client.port })
  socket.on("error", () => socket.destroy())
  socket.on("connect", () => socket.end(message))
  socket.setTimeout(graceMillis, () => socket.destroy())
  socket.unref()
}

// SQLSTATE query_canceled: the cancel arrived, and is spent.
const QUERY_CANCELED = "57014"

/**
 * Watches one statement sent on `client`: returns the function to call with its error (or null) when its
 * answer arrives, which says whether the connection must be retired. Unanswered after `timeoutMillis` it
 * is cancelled; after `graceMillis` more, the connection is closed.
 */
export const watchAnswer = (client: pg.Client, timeoutMillis: number, graceMillis: number): ((error: unknown) => boolean) => {
  const watched = client as unknown as WatchedClient
  let grace: NodeJS.Timeout | undefined
  const timer = setTimeout(() => {
    sendCancel(watched, graceMillis)
    grace = setTimeout(() => watched.connection.stream.destroy(), graceMillis)
    grace.unref()
  }, timeoutMillis)
  timer.unref()
  return (error) => {
    clearTimeout(timer)
    if (grace === undefined) return false
    clearTimeout(grace)
    return (error as { code?: unknown } | null)?.code !== QUERY_CANCELED
  }
}
