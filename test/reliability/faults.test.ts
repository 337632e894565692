// The database misbehaves under three worker processes: their connections are
// terminated again and again, a transaction elsewhere sits on locked jobs.
// Every job still completes exactly once, and the workers say so without an
// error storm. (PostgreSQL restarts and a server out of connection slots need a
// server of their own: restart.test.ts.)
import { describe, expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { fastSettings, outageSettings, query } from "./harness/cluster.js"
import { idleInTransaction, terminateRepeatedly } from "./harness/scenarios.js"

const report = (result: { workers: unknown }) => console.log(JSON.stringify({ ...result, workers: undefined }))

describe("database faults during a run", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("pg_terminate_backend on every worker connection, 5 times: all jobs completed exactly once, LISTEN back", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        // 240 jobs of 200 ms left on 12 slots after the first fifth: at least 4 s of work, so the 2 s of terminations
        // end while jobs remain (with 30 ms handlers a fast machine finished them all before the last one).
        const result = yield* terminateRepeatedly(url, { jobs: 300, settings: { ...outageSettings, handlerMs: 200 }, rounds: 5, everyMs: 400 })
        report(result)
        expect(result.tally).toMatchObject({ enqueued: 300, completed: 300, lost: 0, runTwice: 0, completedWithoutEffect: 0 })
        // Dropped connections cost no job an attempt: the cut-off ones were released, none had to be rescued.
        expect(result.tally.rescued).toBe(0)
        expect(result.details["backendsTerminated"]).toBeGreaterThanOrEqual(15)
        expect(result.workersAlive).toBe(3)
        expect(result.recovery.ms).toBeLessThan(3_000)
        // An attempt cut off with its connection is released without counting it, and says why, in the database's words.
        const reasons = yield* query<{ error: string }>(
          url,
          `SELECT DISTINCT details->>'error' AS error FROM audit_logs WHERE event = 'job_released' AND details->>'reason' = 'database connection lost'`
        )
        expect(reasons.length).toBeGreaterThan(0)
        // e.g. "database connection lost: defect: SqlError: Failed to execute statement: terminating connection due to administrator command"
        // (or "Connection terminated unexpectedly", "read ECONNRESET", … depending on where the cut landed)
        for (const { error } of reasons) expect(error).toMatch(/SqlError: Failed to [^:]+: \S+/)
      }).pipe(Effect.scoped), { timeout: 60_000 })

    it.effect("a transaction idle for longer than the lease, holding running and waiting jobs: the rest goes on, no job is run twice", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const settings = { ...fastSettings, handlerMs: 30 }
        const result = yield* idleInTransaction(url, { jobs: 400, settings, holdMs: 3_000, lockedRunning: 6, lockedWaiting: 8 })
        report(result)
        expect(result.tally).toMatchObject({ enqueued: 400, completed: 400, lost: 0, runTwice: 0, completedWithoutEffect: 0 })
        expect(result.details["lockedRunning"]).toBeGreaterThan(0) // the lock did catch running jobs
        expect(result.details["lockedWaiting"]).toBe(8) // and waiting ones
        expect(result.details["completedWhileHeld"]).toBeGreaterThan(0) // slowed down, not stopped
        expect(Object.values(result.warnings).reduce((a, b) => a + b, 0)).toBeLessThan(30)
      }).pipe(Effect.scoped), { timeout: 60_000 })
  })
})
