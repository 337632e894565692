// kill -9 of one of three worker processes mid-run: every job completes exactly
// once, and the dead worker's jobs are back within lease + one rescue pass.
import { describe, expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { fastSettings } from "./harness/cluster.js"
import { killOneWorker } from "./harness/scenarios.js"

describe("kill -9 of a worker process", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    it.effect("300 jobs, 3 workers, one killed mid-run: all completed exactly once, its jobs back in the queue within lease + rescue interval", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const settings = { ...fastSettings, handlerMs: 30 }
        const result = yield* killOneWorker(url, { jobs: 300, settings })
        console.log(JSON.stringify({ ...result, workers: undefined }))
        expect(result.tally).toMatchObject({ enqueued: 300, completed: 300, lost: 0, runTwice: 0, completedWithoutEffect: 0 })
        expect(result.details["heldByStoppedWorker"]).toBeGreaterThan(0)
        // Every job the dead worker held was rescued in its name.
        expect(result.details["rescuedFromStoppedWorker"]).toEqual({ w2: result.details["heldByStoppedWorker"] })
        // Back in the queue within lease (2 s) + one rescue pass (0.5 s), plus a margin for a loaded machine...
        expect(result.recovery.ms).toBeLessThan(settings.leaseMs + settings.rescueMs + 1_000)
        // ...and completed soon after (once the backlog ahead of them allows).
        expect(result.details["completedAfterMs"]).toBeLessThan(settings.leaseMs + settings.rescueMs + 5_000)
        expect(result.workersAlive).toBe(2)
        // The workers registry still shows the dead worker, with the heartbeat it last managed before the kill.
        expect(result.details["stoppedWorkerRegistered"]).toBe("yes, heartbeat before the stop")
      }).pipe(Effect.scoped), { timeout: 60_000 })
  })
})
