// What `open` means for the benchmark's systems: connected and ready, for every one alike. The cost
// scenario subtracts an open-and-close baseline from each phase; a system that connects only at its
// first statement would put its connection set-up into the phase instead (skiplock's Db layer once
// did: one `SELECT 1` and a connection start-up per phase, shown as 1.5× the statements per batch).
import { afterAll, describe, expect, it } from "vitest"
import { connect, createFreshDatabase, type FreshDatabase } from "../../bench/db.js"
import { graphileWorker } from "../../bench/systems/graphile-worker.js"
import { makePgBoss } from "../../bench/systems/pg-boss.js"
import { skiplock } from "../../bench/systems/skiplock.js"

const serverUrl = process.env.DATABASE_URL || process.env.SKIPLOCK_TEST_ADMIN_URL || ""

const sessionsIn = async (database: string): Promise<number> => {
  const admin = await connect(serverUrl)
  try {
    const { rows } = await admin.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1", [database])
    return rows[0]!.n
  } finally {
    await admin.end()
  }
}

describe("bench systems", () => {
  const dbs: Array<FreshDatabase> = []
  afterAll(async () => {
    for (const db of dbs) await db.drop()
  })

  for (const system of [skiplock, graphileWorker, makePgBoss(false)]) {
    it(`${system.id}: open has connected before the first job is enqueued`, async () => {
      expect(serverUrl, "no PostgreSQL server: set DATABASE_URL or run through vitest's globalSetup").not.toBe("")
      const db = await createFreshDatabase(serverUrl, `${system.id}_open`)
      dbs.push(db)
      await system.install(db.url)
      const instance = await system.open(db.url, { poolSize: 10 })
      try {
        expect(await sessionsIn(db.name)).toBeGreaterThan(0)
      } finally {
        await instance.close()
      }
    })
  }
})
