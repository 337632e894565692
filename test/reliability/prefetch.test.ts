// Workers that claim ahead (prefetch) hold more jobs than they run: a kill -9 or a SIGTERM of one
// of three such workers mid-run must still leave every job completed exactly once.
import { describe, expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { fastSettings, query } from "./harness/cluster.js"
import { stopOneWorker } from "./harness/scenarios.js"

const settings = { ...fastSettings, handlerMs: 30, prefetch: 4 }

describe("prefetching workers stopped mid-run", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("kill -9: the jobs it held, running or claimed ahead, are rescued and completed exactly once", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const result = yield* stopOneWorker(url, { jobs: 300, settings, signal: "SIGKILL" })
        console.log(JSON.stringify({ ...result, workers: undefined }))
        expect(result.tally).toMatchObject({ enqueued: 300, completed: 300, lost: 0, runTwice: 0, completedWithoutEffect: 0 })
        expect(result.details["heldByStoppedWorker"]).toBeGreaterThan(0)
        expect(result.details["rescuedFromStoppedWorker"]).toEqual({ w2: result.details["heldByStoppedWorker"] })
        expect(result.workersAlive).toBe(2)
      }).pipe(Effect.scoped), { timeout: 60_000 })
  })

  // A database of its own: the audit trail of the kill above would show here as rescues.
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("SIGTERM: it gives back what it claimed ahead at once, finishes what runs, exits 0; every job completed exactly once", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const result = yield* stopOneWorker(url, { jobs: 300, settings, signal: "SIGTERM" })
        console.log(JSON.stringify({ ...result, workers: undefined }))
        expect(result.tally).toMatchObject({ enqueued: 300, completed: 300, lost: 0, runTwice: 0, completedWithoutEffect: 0 })
        expect(result.details["exit"]).toMatchObject({ code: 0 })
        expect(result.details["rescuedFromStoppedWorker"]).toEqual({})
        // Nor any job it claimed after the harness looked (a claim on its way when the stop began): none was left for a rescue.
        expect(result.details["otherRescues"]).toBeUndefined()
        // Nothing of its jobs was left for a rescue, and the stopped worker released only jobs that never ran there.
        const releasedThenRun = yield* query<{ n: number }>(url, `
          SELECT count(*)::int AS n FROM audit_logs r
          WHERE r.event = 'job_released' AND r.actor = 'w2'
            AND EXISTS (SELECT 1 FROM effects e WHERE e.job_id = r.job_id AND e.worker_id = 'w2')`)
        expect(releasedThenRun[0]!.n).toBe(0)
      }).pipe(Effect.scoped), { timeout: 60_000 })
  })
})
