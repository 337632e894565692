// The CLI as operators run it, a real process: `npx skiplock …` (bin/skiplock.js)
// and `npm run cli -- …`, with the exit codes scripts rely on.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import pg from "pg"
import { migrationSets } from "../../src/app/jobs.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { eventually } from "../support/live.js"
import { cleanEnv, freePort, spawnScoped, waitForExit, waitForReady } from "../service/support.js"

const MISSING = "00000000-0000-4000-8000-000000000000"
const ORG = "3f2c1e4a-9b7d-4c2e-8f1a-0d6b5e4c3a21"

const exec = (command: string, args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const { url } = yield* TestDatabase
    const running = yield* spawnScoped(command, args, { ...cleanEnv(), DATABASE_URL: url })
    const { code } = yield* waitForExit(running)
    return { code, output: running.output().replace(/\x1b\[[0-9;]*m/g, "") }
  })

describe("the skiplock executable", () => {
  layer(TestDatabase.layer({ migrations: migrationSets }), { excludeTestServices: true })((it) => {
    it.scoped("npx skiplock: 0 when the command succeeds", () =>
      Effect.gen(function* () {
        const result = yield* exec("npx", ["--no", "skiplock", "stats"])
        expect(result.code).toBe(0)
        expect(result.output).toContain("oldest runnable job: none")
      }), 60_000)

    it.scoped("1 when the command fails, with one line that says why", () =>
      Effect.gen(function* () {
        const result = yield* exec(process.execPath, ["bin/skiplock.js", "jobs", "show", MISSING])
        expect(result).toEqual({ code: 1, output: `skiplock: no job with id ${MISSING}` })
      }), 60_000)

    it.scoped("skiplock start runs the service until SIGTERM, then exits 0", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const port = yield* freePort
        const service = yield* spawnScoped(process.execPath, ["bin/skiplock.js", "start"], {
          ...cleanEnv(),
          DATABASE_URL: url,
          PORT: String(port),
          HOST: "127.0.0.1",
          LOG_FORMAT: "json",
          WORKER_CONCURENCY: "50" // misspelled: said at start, not ignored without a word
        })
        yield* waitForReady(service, port)
        expect(service.output()).toContain("ignoring WORKER_CONCURENCY: not a setting of skiplock's (misspelled?")
        service.child.kill("SIGTERM")
        expect(yield* waitForExit(service)).toEqual({ code: 0, signal: null })
      }), 90_000)

    it.scoped("skiplock start with a global option before the command (--log-level info start) also exits 0 on SIGTERM, without saying it was interrupted", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const port = yield* freePort
        // The command was told apart by argv[2]: with an option first, a graceful stop exited 130 (found by a review).
        const service = yield* spawnScoped(process.execPath, ["bin/skiplock.js", "--log-level", "info", "start"], {
          ...cleanEnv(),
          DATABASE_URL: url,
          PORT: String(port),
          HOST: "127.0.0.1",
          LOG_FORMAT: "json"
        })
        yield* waitForReady(service, port)
        service.child.kill("SIGTERM")
        const exited = yield* waitForExit(service)
        expect(service.output()).not.toContain("interrupted before the command finished")
        expect(exited).toEqual({ code: 0, signal: null })
      }), 90_000)

    it.scoped("skiplock start warns about stored data a migration could not settle (customers whose IBAN no bank issues)", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        // As billing 0009 leaves it over customers stored before it whose IBAN fails the check.
        yield* Effect.acquireRelease(
          sql`ALTER TABLE customers DROP CONSTRAINT customers_iban_valid; ALTER TABLE customers ADD CONSTRAINT customers_iban_valid CHECK (iban_is_valid(iban)) NOT VALID`.unprepared,
          () => Effect.orDie(sql`ALTER TABLE customers VALIDATE CONSTRAINT customers_iban_valid`)
        )
        const port = yield* freePort
        const service = yield* spawnScoped(process.execPath, ["bin/skiplock.js", "start"], {
          ...cleanEnv(), DATABASE_URL: url, PORT: String(port), HOST: "127.0.0.1", LOG_FORMAT: "json"
        })
        yield* waitForReady(service, port)
        expect(service.output()).toContain("customers_iban_valid is NOT VALID")
        service.child.kill("SIGTERM")
        expect(yield* waitForExit(service)).toEqual({ code: 0, signal: null })
      }), 90_000)

    it.scoped("skiplock start that cannot start exits 1 and says why once", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const service = yield* spawnScoped(process.execPath, ["bin/skiplock.js", "start"], { ...cleanEnv(), DATABASE_URL: url, PORT: "eighty" })
        expect((yield* waitForExit(service)).code).toBe(1)
        expect(service.output()).toBe(`skiplock: invalid configuration:\n  PORT="eighty" is not valid: expected a whole number from 0 to 65535`)
      }), 60_000)

    it.scoped("2 for a usage error (npm run cli -- …)", () =>
      Effect.gen(function* () {
        const result = yield* exec("npm", ["run", "-s", "cli", "--", "jobs", "show", "not-a-uuid"])
        expect(result.code).toBe(2)
        expect(result.output).toContain('the job id must be a UUID like 3f2c1e4a-9b7d-4c2e-8f1a-0d6b5e4c3a21, got "not-a-uuid"')
      }), 60_000)

    it.scoped("130 when Ctrl-C or SIGTERM interrupts a command before it finished (here: waiting for a locked row), saying so", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        const [job] = yield* sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type, payload) VALUES (${ORG}, 'report_generation', '{}') RETURNING id`
        // An operator's session holds the job's row.
        const holder = new pg.Client({ connectionString: url })
        yield* Effect.acquireRelease(Effect.promise(() => holder.connect()), () => Effect.promise(() => holder.end()))
        yield* Effect.promise(() => holder.query("BEGIN"))
        yield* Effect.promise(() => holder.query("SELECT id FROM job_queue WHERE id = $1 FOR UPDATE", [job!.id]))
        const waiting = sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%fail_job_manually%'`
        for (const signal of ["SIGINT", "SIGTERM"] as const) {
          const command = yield* spawnScoped(process.execPath, ["bin/skiplock.js", "jobs", "fail", job!.id, "--reason", "stuck"], { ...cleanEnv(), DATABASE_URL: url })
          yield* eventually(Effect.map(waiting, ([row]) => row!.n === 1), "the command waits for the row", "20 seconds")
          command.child.kill(signal)
          expect((yield* waitForExit(command)).code).toBe(130)
          expect(command.output()).toBe("skiplock: interrupted before the command finished")
          yield* eventually(Effect.map(waiting, ([row]) => row!.n === 0), "the interrupted command's statement is gone", "20 seconds")
        }
        yield* Effect.promise(() => holder.query("ROLLBACK"))
        const [row] = yield* sql<{ status: string }>`SELECT status FROM job_queue WHERE id = ${job!.id}`
        expect(row!.status).toBe("pending")
      }), 60_000)

    it.scoped("a reader that goes away (| head) ends the command quietly, without a stack trace", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        yield* sql`INSERT INTO job_queue (organization_id, job_type, payload)
          SELECT ${ORG}, 'report_generation', jsonb_build_object('n', n, 'padding', repeat('x', 500)) FROM generate_series(1, 1000) AS n`
        const command = yield* spawnScoped(process.execPath, ["bin/skiplock.js", "jobs", "list", "--limit", "1000", "--json"], { ...cleanEnv(), DATABASE_URL: url })
        // The first chunk, then the reader closes its end, as head does once it has its lines.
        yield* Effect.promise(() => new Promise<void>((resolve) => command.child.stdout!.once("data", () => resolve())))
        command.child.stdout!.destroy()
        expect((yield* waitForExit(command)).code).toBe(0)
        expect(command.output()).not.toContain("EPIPE")
        expect(command.output()).not.toContain("Error")
      }), 60_000)
  })
})
