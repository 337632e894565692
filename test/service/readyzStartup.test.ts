// /readyz while the service starts: once the database has answered, the detail says what start-up waits
// for next, not the last failed try's reason ("waiting for the database …: Connection terminated …"),
// which it kept for the rest of start-up (found by a review). The rest of start-up is held here by a
// lock on the migration ledger, as a long migration or an operator's open transaction would hold it.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import pg from "pg"
import { migrationSets } from "../../src/app/jobs.js"
import { acquireTestDatabase } from "../../src/testing/TestDatabase.js"
import { restartableProxy } from "../support/proxy.js"
import { FIXTURE_HANDLERS, freePort, get, startService, waitUntil } from "../service/support.js"

describe("/readyz during start-up", () => {
  it.scopedLive("does not say the database is unreachable once it has answered", () =>
    Effect.gen(function* () {
      const { url } = yield* acquireTestDatabase({ migrations: migrationSets })
      const admin = new pg.Client({ connectionString: url, application_name: "test-locker" })
      yield* Effect.acquireRelease(Effect.promise(() => admin.connect()), () => Effect.promise(() => admin.end()))
      // pg_stat_activity read inside the locker's transaction would be that transaction's snapshot.
      const observer = new pg.Client({ connectionString: url, application_name: "test-observer" })
      yield* Effect.acquireRelease(Effect.promise(() => observer.connect()), () => Effect.promise(() => observer.end()))
      // Start-up reads the ledger after the database answers: held here.
      yield* Effect.promise(() => admin.query("BEGIN; LOCK TABLE skiplock_migrations IN ACCESS EXCLUSIVE MODE"))

      const proxy = yield* restartableProxy(url)
      proxy.down()
      const port = yield* freePort
      const service = yield* startService({ DATABASE_URL: proxy.url, PORT: String(port), HOST: "127.0.0.1", SKIPLOCK_HANDLER_MODULES: FIXTURE_HANDLERS })

      const waiting = yield* waitUntil(
        "/readyz says it waits for the database",
        Effect.map(get(port, "/readyz"), (r) => (r !== undefined && r.body.includes("waiting for the database") ? r : undefined)),
        service
      )
      expect(waiting.status).toBe(503)

      // The database comes back: the service connects and reads the ledger (and waits for the lock).
      proxy.up()
      yield* waitUntil(
        "the service's start-up waits on the ledger's lock",
        Effect.map(
          Effect.promise(() =>
            observer.query<{ n: number }>(
              "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE '%skiplock_migrations%' AND application_name NOT LIKE 'test-%'"
            )
          ),
          (result) => (result.rows[0]!.n > 0 ? true : undefined)
        ),
        service,
        "60 seconds"
      )
      expect(service.logs().some((line) => line.message.includes("is reachable"))).toBe(true)

      const readiness = (yield* get(port, "/readyz"))!
      expect(readiness.status).toBe(503)
      const body = JSON.parse(readiness.body) as { status: string; detail: string }
      expect(body.status).toBe("starting")
      // The database answers (the service is connected to it): the reason must not be that it cannot be reached.
      expect(body.detail).not.toContain("waiting for the database")
      expect(body.detail).toMatch(/^the database .* answers; checking its migrations$/)

      yield* Effect.promise(() => admin.query("ROLLBACK"))
    }), { timeout: 90_000 })
})
