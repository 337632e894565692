// `npm start` on a machine without DATABASE_URL: the service starts an embedded
// PostgreSQL (data under the data directory, `.data/` by default), migrates it,
// runs jobs, stops it cleanly on SIGTERM, and finds its data again next time.
// The data directory and both ports are set per test, so the run never touches
// a developer's `.data/` or a service already running on the default ports.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { existsSync } from "node:fs"
import { chmod, mkdtemp, rm } from "node:fs/promises"
import { createConnection, createServer, type Server } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pg from "pg"
import {
  cleanEnv,
  FIXTURE_HANDLERS,
  freePort,
  ORG,
  spawnScoped,
  waitForExit,
  waitForReady,
  waitUntil
} from "./support.js"

const tempDirectory = Effect.acquireRelease(
  Effect.promise(async () => {
    const dir = await mkdtemp(join(tmpdir(), "skiplock-embedded-test-"))
    await chmod(dir, 0o755) // as root, PostgreSQL runs as `postgres` and must reach the data directory
    return dir
  }),
  (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
)

const query = <R extends pg.QueryResultRow>(url: string, text: string) =>
  Effect.promise(async () => {
    const client = new pg.Client({ connectionString: url })
    await client.connect()
    try {
      return (await client.query<R>(text)).rows
    } finally {
      await client.end()
    }
  })

const portAnswers = (port: number) =>
  Effect.async<boolean>((resume) => {
    const socket = createConnection({ port, host: "127.0.0.1" })
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed(true))
    })
    socket.once("error", () => resume(Effect.succeed(false)))
  })

describe("npm start without DATABASE_URL", () => {
  it.scopedLive("starts an embedded PostgreSQL under the data directory, runs a job, stops cleanly, and keeps its data", () =>
    Effect.gen(function* () {
      const dir = yield* tempDirectory
      const dataDir = join(dir, ".data")
      const embeddedPort = yield* freePort
      const env = (port: number) => ({
        ...cleanEnv(),
        PORT: String(port),
        HOST: "127.0.0.1",
        SKIPLOCK_DATA_DIR: dataDir,
        SKIPLOCK_EMBEDDED_PORT: String(embeddedPort),
        SKIPLOCK_HANDLER_MODULES: FIXTURE_HANDLERS,
        LOG_FORMAT: "json"
      })
      expect(cleanEnv()["DATABASE_URL"]).toBeUndefined()

      const port = yield* freePort
      const first = yield* spawnScoped("npm", ["start"], env(port))
      yield* waitForReady(first, port, "150 seconds")
      const url = `postgres://postgres:postgres@127.0.0.1:${embeddedPort}/skiplock`
      const announced = first.logs().find((line) => line.message.startsWith("DATABASE_URL is not set"))
      expect(announced?.message).toBe(
        `DATABASE_URL is not set: using the embedded PostgreSQL on 127.0.0.1:${embeddedPort} (data in ${join(dataDir, "postgres")}); connect with: psql ${url}`
      )
      expect(existsSync(join(dataDir, "postgres", "PG_VERSION"))).toBe(true)

      // The runbook's SQL, through the URL the log gives.
      yield* query(url, `INSERT INTO job_queue (organization_id, job_type, payload, status)
                         VALUES ('${ORG}', 'sepa_export', '{"batchId":"test-1"}'::jsonb, 'pending')`)
      yield* waitUntil(
        "the job completes",
        Effect.map(query<{ status: string }>(url, "SELECT status FROM job_queue"), (rows) => (rows[0]?.status === "completed" ? true : undefined)),
        first
      )

      first.child.kill("SIGTERM") // to npm, which passes it on to the service
      expect(yield* waitForExit(first, "60 seconds")).toEqual({ code: 0, signal: null })
      expect(first.logs().some((line) => line.message === "stopping the embedded PostgreSQL")).toBe(true)
      expect(yield* portAnswers(embeddedPort)).toBe(false)

      // Second start: the cluster is reused, not created again, and the job is still there.
      const secondPort = yield* freePort
      const second = yield* spawnScoped("npm", ["start"], env(secondPort))
      yield* waitForReady(second, secondPort, "120 seconds")
      expect(second.logs().some((line) => line.message.includes("(first run)"))).toBe(false)
      expect(second.logs().some((line) => line.message === "migrations are up to date")).toBe(true)
      expect(yield* query<{ status: string; job_type: string }>(url, "SELECT job_type, status FROM job_queue")).toEqual([
        { job_type: "sepa_export", status: "completed" }
      ])
      second.child.kill("SIGTERM")
      expect(yield* waitForExit(second, "60 seconds")).toEqual({ code: 0, signal: null })
      expect(yield* portAnswers(embeddedPort)).toBe(false)
    }), 300_000)

  it.scopedLive("Ctrl-C in a terminal stops the service as SIGTERM does: the embedded PostgreSQL outlives the worker, which releases its job", () =>
    Effect.gen(function* () {
      const dir = yield* tempDirectory
      const embeddedPort = yield* freePort
      const env = (port: number, handlers: boolean) => ({
        ...cleanEnv(),
        PORT: String(port),
        HOST: "127.0.0.1",
        SKIPLOCK_DATA_DIR: join(dir, ".data"),
        SKIPLOCK_EMBEDDED_PORT: String(embeddedPort),
        ...(handlers ? { SKIPLOCK_HANDLER_MODULES: FIXTURE_HANDLERS } : {}),
        WORKER_SHUTDOWN_TIMEOUT: "1s",
        LOG_FORMAT: "json"
      })
      const url = `postgres://postgres:postgres@127.0.0.1:${embeddedPort}/skiplock`
      const port = yield* freePort
      // Its own process group, as a terminal's foreground job, which Ctrl-C signals as a whole.
      const first = yield* spawnScoped(process.execPath, ["--import", "tsx", "src/main.ts"], env(port, true), { ownProcessGroup: true })
      yield* waitForReady(first, port, "150 seconds")
      yield* query(url, `INSERT INTO job_types (name, description) VALUES ('test_sleep', 'test: sleeps') ON CONFLICT DO NOTHING`)
      yield* query(url, `INSERT INTO job_queue (organization_id, job_type, payload) VALUES ('${ORG}', 'test_sleep', '{"ms":600000}')`)
      yield* waitUntil(
        "the job runs",
        Effect.map(query<{ status: string }>(url, "SELECT status FROM job_queue"), (rows) => (rows[0]?.status === "processing" ? true : undefined)),
        first
      )
      process.kill(-first.child.pid!, "SIGINT")
      expect(yield* waitForExit(first, "60 seconds")).toEqual({ code: 0, signal: null })
      expect(first.logs().filter((line) => line.logLevel === "ERROR").map((line) => line.message)).toEqual([])
      expect(yield* portAnswers(embeddedPort)).toBe(false)

      // Started again without the test's handlers (so that nothing claims the job): it was released, not left processing.
      const secondPort = yield* freePort
      const second = yield* spawnScoped(process.execPath, ["--import", "tsx", "src/main.ts"], env(secondPort, false))
      yield* waitForReady(second, secondPort, "120 seconds")
      expect(yield* query<{ status: string; attempts: number }>(url, "SELECT status, attempts FROM job_queue")).toEqual([{ status: "pending", attempts: 0 }])
      expect((yield* query<{ event: string }>(url, "SELECT event FROM audit_logs ORDER BY id")).map((row) => row.event)).toEqual(["job_started", "job_released"])
      second.child.kill("SIGTERM")
      expect(yield* waitForExit(second, "60 seconds")).toEqual({ code: 0, signal: null })
    }), 300_000)

  it.scopedLive("refuses to start when the embedded port is taken, and says what to do", () =>
    Effect.gen(function* () {
      const dir = yield* tempDirectory
      const server = yield* Effect.acquireRelease(
        Effect.async<Server>((resume) => {
          const blocker = createServer()
          blocker.listen(0, "127.0.0.1", () => resume(Effect.succeed(blocker)))
        }),
        (blocker) => Effect.async<void>((resume) => void blocker.close(() => resume(Effect.void)))
      )
      const taken = (server.address() as { port: number }).port
      const port = yield* freePort
      const service = yield* spawnScoped(process.execPath, ["--import", "tsx", "src/main.ts"], {
        ...cleanEnv(),
        PORT: String(port),
        HOST: "127.0.0.1",
        SKIPLOCK_DATA_DIR: join(dir, ".data"),
        SKIPLOCK_EMBEDDED_PORT: String(taken),
        LOG_FORMAT: "json"
      })
      expect((yield* waitForExit(service)).code).toBe(1)
      const fatal = service.logs().find((line) => line.logLevel === "FATAL")
      expect(fatal?.message).toContain(`port ${taken} on 127.0.0.1 is in use`)
      expect(fatal?.message).toContain("SKIPLOCK_EMBEDDED_PORT")
      expect(fatal?.message).toContain("DATABASE_URL")
    }), 60_000)
})
