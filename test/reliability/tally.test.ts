// The reliability harness's tally (and `npm run chaos`'s) counts job by number: a job whose row went
// missing, or a job done twice under two rows, shows as lost or run twice, not as nothing.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { TestDatabase } from "../../src/testing/TestDatabase.js"
import { enqueueJobs, prepareQueue, query, tally } from "./harness/cluster.js"

// What a worker leaves behind for the job numbered n: completed, with one committed effect.
const complete = (url: string, n: number) =>
  Effect.zipRight(
    query(url, `UPDATE job_queue SET status = 'completed', completed_at = now() WHERE (payload->>'n')::int = $1`, [n]),
    query(url, `INSERT INTO effects (job_id, n, worker_id, attempt) SELECT id, $1, 'w', 1 FROM job_queue WHERE (payload->>'n')::int = $1`, [n])
  )

describe("the reliability tally", () => {
  it.layer(TestDatabase.layer())((it) => {
    it.effect("counts job by number: a vanished row is lost, a job done twice under two rows is run twice", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        yield* prepareQueue(url)
        yield* enqueueJobs(url, 5)
        for (const n of [1, 2, 3, 4, 5]) yield* complete(url, n)
        expect(yield* tally(url)).toMatchObject({ enqueued: 5, completed: 5, lost: 0, runTwice: 0, completedWithoutEffect: 0 })

        // Job 5's row vanishes.
        yield* query(url, `DELETE FROM effects WHERE n = 5`)
        yield* query(url, `DELETE FROM job_queue WHERE (payload->>'n')::int = 5`)
        expect(yield* tally(url)).toMatchObject({ enqueued: 4, completed: 4, lost: 1, runTwice: 0 })

        // Job 2 runs again under a second row, with an effect of its own.
        yield* query(url, `INSERT INTO job_queue (organization_id, job_type, payload, status, completed_at)
                           SELECT organization_id, job_type, payload, 'completed', now() FROM job_queue WHERE (payload->>'n')::int = 2
                           RETURNING id`)
        yield* query(url, `INSERT INTO effects (job_id, n, worker_id, attempt)
                           SELECT id, 2, 'w2', 1 FROM job_queue WHERE (payload->>'n')::int = 2 AND id NOT IN (SELECT job_id FROM effects)`)
        expect(yield* tally(url)).toMatchObject({ enqueued: 5, completed: 5, lost: 2, runTwice: 1, completedWithoutEffect: 0 })
      }))
  })
})
