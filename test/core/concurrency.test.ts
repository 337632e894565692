// Three workers on one queue: every job runs exactly once. Real clock, real LISTEN.
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { Db, Handler, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG, statusCounts } from "../support/jobs.js"
import { eventually } from "../support/live.js"

const Import = JobDefinition.make("bulk_invoice_upsert", Schema.Struct({ n: Schema.Int }))
const Report = JobDefinition.make("report_generation", Schema.Struct({ n: Schema.Int }))

describe("concurrency", () => {
  layer(TestDatabase.layer(), { excludeTestServices: true })((it) => {
    // One job type: each claim walks that type's part of the runnable index. Two: each claim merges
    // the first due jobs of both and locks them by id (0037), while the other workers do the same.
    for (const definitions of [[Import], [Import, Report]]) {
      const types = definitions.map((definition) => definition.jobType)
      it.effect(`3 workers, 1,000 jobs of ${types.join(" and ")}: every job completed exactly once`, () =>
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const { url } = yield* TestDatabase
          yield* sql`DROP TABLE IF EXISTS effects`
          yield* sql`DELETE FROM job_queue`
          yield* sql`CREATE TABLE effects (job_id uuid NOT NULL, n int NOT NULL)`
          // Transactional: the effect row commits with the job's completion, so the table counts completions exactly.
          const handlers = definitions.map((definition) =>
            Handler.make(definition, {
              transactional: true,
              run: (payload, job) => Effect.asVoid(sql`INSERT INTO effects (job_id, n) VALUES (${job.jobId}, ${payload.n})`)
            })
          )
          // The types take turns, so that claims find due jobs of each.
          yield* JobQueue.enqueueMany(
            Array.from({ length: 1000 }, (_, n) => ({ organizationId: ORG, jobType: types[n % types.length]!, payload: { n } }))
          ).pipe(Effect.provide(JobQueue.layer(definitions)))

          // Each worker has its own connection pool, as separate processes would.
          const worker = (id: string) =>
            Layer.build(Worker.layer({ handlers, workerId: id, concurrency: 5, pollInterval: "200 millis" }).pipe(
              Layer.provide(Db.layer({ url, maxConnections: 6 }))
            ))
          yield* Effect.all([worker("w1"), worker("w2"), worker("w3")], { concurrency: "unbounded" })

          yield* eventually(Effect.map(statusCounts, (counts) => counts.completed === 1000), "all jobs completed", "60 seconds")
          const [effects] = yield* sql<{ total: number; distinctJobs: number; distinctN: number }>`
            SELECT count(*)::int AS total, count(DISTINCT job_id)::int AS "distinctJobs", count(DISTINCT n)::int AS "distinctN" FROM effects`
          expect(effects).toEqual({ total: 1000, distinctJobs: 1000, distinctN: 1000 })
          const perWorker = yield* sql<{ actor: string; n: number }>`
            SELECT actor, count(*)::int AS n FROM audit_logs WHERE event = 'job_completed' AND job_id IN (SELECT job_id FROM effects)
            GROUP BY actor ORDER BY actor`
          expect(perWorker.map((row) => row.actor)).toEqual(["w1", "w2", "w3"]) // all three took part
          expect(perWorker.reduce((sum, row) => sum + row.n, 0)).toBe(1000)
          const [starts] = yield* sql<{ n: number }>`
            SELECT count(*)::int AS n FROM audit_logs WHERE event = 'job_started' AND job_id IN (SELECT job_id FROM effects)`
          expect(starts!.n).toBe(1000) // no job was even started twice
        }).pipe(Effect.scoped), { timeout: 90_000 })
    }
  })
})
