// Faults that need a PostgreSQL server of our own (never the shared one): the
// server restarted mid-run, and every connection slot taken by another client.
// Three worker processes log the outage, keep running, reconnect (LISTEN too)
// and finish every job exactly once.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { acquireTestDatabase } from "../../src/testing/TestDatabase.js"
import { outageSettings, warnings } from "./harness/cluster.js"
import { connectionsExhausted, restartPostgres, type ScenarioResult } from "./harness/scenarios.js"
import { throwawayPostgres } from "./harness/throwawayPostgres.js"

const report = (result: ScenarioResult) => {
  console.log(JSON.stringify({ ...result, workers: undefined }))
  const counts: Record<string, number> = {}
  for (const worker of result.workers) for (const line of warnings(worker)) {
    const key = String(line.message).replace(/[0-9a-f-]{36}|\d{4}-\d\d-\d\dT[\d:.]+Z|\d+/g, "#").slice(0, 90)
    counts[key] = (counts[key] ?? 0) + 1
  }
  console.log(JSON.stringify(counts, null, 1))
}

describe("faults of the server itself (a throwaway PostgreSQL)", () => {
  it.scopedLive("PostgreSQL restarted mid-run (down 1.5 s): the workers log it, reconnect, LISTEN again, and finish every job exactly once", () =>
    Effect.gen(function* () {
      const server = yield* throwawayPostgres()
      const { url } = yield* acquireTestDatabase({ adminUrl: server.adminUrl })
      // 200 jobs of 100 ms left on 12 slots when the server is stopped: work left when it is back, however fast the machine.
      const result = yield* restartPostgres(server, url, { jobs: 300, settings: { ...outageSettings, handlerMs: 100 }, downMs: 1_500 })
      report(result)
      expect(result.tally).toMatchObject({ enqueued: 300, completed: 300, lost: 0, runTwice: 0, completedWithoutEffect: 0 })
      // Shorter than the lease, the outage cost no job an attempt: the workers kept or released their jobs, nobody rescued them.
      expect(result.tally.rescued).toBe(0)
      expect(result.workersAlive).toBe(3)
      // Each worker noticed and said so, in a few lines (the rest are one line per job hit, at most one per attempt).
      for (const n of Object.values(result.details["outageWarnings"] as Record<string, number>)) {
        expect(n).toBeGreaterThan(0)
        expect(n).toBeLessThanOrEqual(8)
      }
      expect(result.recovery.ms).toBeLessThan(5_000)
    }), { timeout: 90_000 })

  it.scopedLive("every connection slot taken by another client for 3 s: the workers wait it out and finish every job exactly once", () =>
    Effect.gen(function* () {
      const server = yield* throwawayPostgres({ maxConnections: 40 })
      const { url } = yield* acquireTestDatabase({ adminUrl: server.adminUrl, maxConnections: 2 })
      const result = yield* connectionsExhausted(server.adminUrl, url, { jobs: 300, settings: { ...outageSettings, handlerMs: 30, maxConnections: 6 }, holdMs: 3_000 })
      report(result)
      expect(result.tally).toMatchObject({ enqueued: 300, completed: 300, lost: 0, runTwice: 0, completedWithoutEffect: 0 })
      // Shorter than the lease, the outage cost no job an attempt: the workers kept or released their jobs, nobody rescued them.
      expect(result.tally.rescued).toBe(0)
      expect(result.workersAlive).toBe(3)
      // The workers' connections were dropped again and again until none was left: one outage, said once per task
      // (claiming, heartbeat, rescue, LISTEN) and again every 10th failure, not once per drop.
      for (const n of Object.values(result.details["outageWarnings"] as Record<string, number>)) expect(n).toBeLessThanOrEqual(20)
      expect(result.recovery.ms).toBeLessThan(5_000)
    }), { timeout: 90_000 })
})
