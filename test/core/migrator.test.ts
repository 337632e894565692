// The migrator against a busy database: a migration that needs a table to
// itself (an ALTER TABLE) while another session's transaction holds it gives
// up after its lock timeout, applies nothing and says what to do, instead of
// waiting, and holding up every statement on that table meanwhile. And a user's set named like
// one of skiplock's is refused before anything runs.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pg from "pg"
import { Db, Migrator } from "../../src/index.js"
import { acquireTestDatabase, TestDatabase } from "../../src/testing/TestDatabase.js"
import { ORG } from "../support/jobs.js"

const migrationSet = Effect.acquireRelease(
  Effect.promise(async () => {
    const folder = join(await mkdtemp(join(tmpdir(), "skiplock-migrator-")), "review_notes")
    await mkdir(folder)
    await writeFile(join(folder, "0001_review_notes.sql"), "CREATE TABLE review_notes (id int);\nALTER TABLE job_queue ADD COLUMN review_note text;\n")
    return folder
  }),
  (folder) => Effect.promise(() => rm(join(folder, ".."), { recursive: true, force: true }))
)

/** An empty migration set folder named `name`, removed with the scope. */
const emptySet = (name: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const folder = join(await mkdtemp(join(tmpdir(), "skiplock-migrator-")), name)
      await mkdir(folder)
      return folder
    }),
    (folder) => Effect.promise(() => rm(join(folder, ".."), { recursive: true, force: true }))
  )
const write = (folder: string, file: string, text: string) => Effect.promise(() => writeFile(join(folder, file), text))

/** A fresh database migrated to just before `version`, as one deployed before it is: core's earlier files in a folder named core. */
const migratedBefore = (version: string) =>
  Effect.gen(function* () {
    const parent = yield* Effect.acquireRelease(
      Effect.promise(() => mkdtemp(join(tmpdir(), "skiplock-migrator-"))),
      (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
    )
    const before = join(parent, "core")
    yield* Effect.promise(async () => {
      await mkdir(before)
      for (const file of await readdir(Migrator.coreMigrations)) {
        if (file < version) await copyFile(join(Migrator.coreMigrations, file), join(before, file))
      }
    })
    const { url } = yield* acquireTestDatabase({ migrations: [before] })
    return url
  })

describe("Migrator", () => {
  it.layer(TestDatabase.layer())((it) => {
    it.scoped("a migration that waits for a lock gives up after its lock timeout, applies nothing, and says what to do", () =>
      Effect.gen(function* () {
        const { url } = yield* TestDatabase
        const sql = yield* SqlClient.SqlClient
        const folder = yield* migrationSet
        // Another session reads job_queue in a transaction it keeps open (a report, a pg_dump).
        const other = new pg.Client({ connectionString: url })
        yield* Effect.acquireRelease(Effect.promise(() => other.connect()), () => Effect.promise(() => other.end()))
        yield* Effect.promise(() => other.query("BEGIN; SELECT count(*) FROM job_queue"))
        const started = Date.now()
        const error = yield* Effect.flip(Migrator.migrate([folder], { lockTimeout: "500 millis" }))
        expect(Date.now() - started).toBeLessThan(5_000)
        expect(error.message).toBe(
          "migration review_notes/0001_review_notes failed: canceling statement due to lock timeout; it waited 500ms for a lock " +
            "another session holds (an open transaction: see pg_stat_activity), and nothing was applied; run it again once that session has ended"
        )
        const [state] = yield* sql<{ table: string | null; applied: number }>`
          SELECT to_regclass('review_notes')::text AS table,
                 (SELECT count(*)::int FROM skiplock_migrations WHERE set_name = 'review_notes') AS applied`
        expect(state).toEqual({ table: null, applied: 0 })
        // Once that session has ended, it applies.
        yield* Effect.promise(() => other.query("COMMIT"))
        expect(yield* Migrator.migrate([folder], { lockTimeout: "500 millis" })).toEqual(["review_notes/0001_review_notes"])
        yield* sql`ALTER TABLE job_queue DROP COLUMN review_note`
      }))

    it.scoped("a migration changed after it was applied is named by `changed` (start-up refuses it) and refused by `migrate`", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const parent = yield* Effect.acquireRelease(
          Effect.promise(() => mkdtemp(join(tmpdir(), "skiplock-migrator-"))),
          (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
        )
        const folder = join(parent, "edited_notes")
        yield* Effect.promise(() => mkdir(folder).then(() => writeFile(join(folder, "0001_notes.sql"), "CREATE TABLE edited_notes (id int);\n")))
        expect(yield* Migrator.migrate([folder])).toEqual(["edited_notes/0001_notes"])
        expect(yield* Migrator.changed([Migrator.coreMigrations, folder])).toEqual([])
        // Corrected in place: the database still has the first text's table.
        yield* Effect.promise(() => writeFile(join(folder, "0001_notes.sql"), "CREATE TABLE edited_notes (id bigint);\n"))
        expect(yield* Migrator.changed([Migrator.coreMigrations, folder])).toEqual(["edited_notes/0001_notes"])
        expect(yield* Migrator.pending([folder])).toEqual([])
        expect((yield* Effect.flip(Migrator.migrate([folder]))).message).toBe(
          "migration edited_notes/0001_notes was changed after it was applied; add a new migration instead"
        )
        yield* sql`DROP TABLE edited_notes`
        yield* sql`DELETE FROM skiplock_migrations WHERE set_name = 'edited_notes'`
      }))

    it.scoped("0034 fails a pending job whose attempts no claim could take (it stopped every claim), with its reason and audit entry", () =>
      Effect.gen(function* () {
        const url = yield* migratedBefore("0034")
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          yield* sql`INSERT INTO job_types (name, description) VALUES ('poisoned', 'test') ON CONFLICT DO NOTHING`
          const [poison] = yield* sql<{ id: string }>`
            INSERT INTO job_queue (organization_id, job_type, attempts, max_attempts) VALUES (${ORG}, 'poisoned', 2147483647, 3) RETURNING id`
          const [fine] = yield* sql<{ id: string }>`INSERT INTO job_queue (organization_id, job_type) VALUES (${ORG}, 'poisoned') RETURNING id`
          // Before 0034 the poisoned row fails every claim as a whole.
          expect(String((yield* Effect.flip(sql`SELECT * FROM claim_next_job('w', NULL, 5)`)).cause)).toContain("integer out of range")
          expect((yield* Migrator.migrate([Migrator.coreMigrations]))[0]).toBe("core/0034_attempts_stay_within_max_attempts")
          const [row] = yield* sql<{ status: string; error: string }>`SELECT status, error FROM job_queue WHERE id = ${poison!.id}`
          expect(row).toEqual({
            status: "failed",
            error: "attempts 2147483647 is not below max_attempts 3 (set by hand), so the job could never be claimed; failed by migration 0034: retry it to start again from 0"
          })
          expect(yield* sql`SELECT actor, event FROM audit_logs WHERE job_id = ${poison!.id}`).toEqual([{ actor: "migration 0034", event: "job_failed" }])
          // The others are claimed again.
          expect((yield* sql<{ id: string }>`SELECT id FROM claim_next_job('w', NULL, 5)`).map((job) => job.id)).toEqual([fine!.id])
        }).pipe(Effect.provide(Db.layer({ url })))
      }))

    it.scoped("0039 fails a processing row without a lease (set by hand: no rescue could return it), with its reason and audit entry; such rows are refused since", () =>
      Effect.gen(function* () {
        const url = yield* migratedBefore("0039")
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const [held] = yield* sql<{ id: string }>`
            INSERT INTO job_queue (organization_id, job_type, status, locked_by) VALUES (${ORG}, 'dunning_run', 'processing', 'gone-worker') RETURNING id`
          // Before 0039 no rescue ever returns it: it has no lease to run out.
          expect(yield* sql`SELECT id FROM rescue_expired_jobs('rescuer', now() + interval '1 day')`).toEqual([])
          expect((yield* Migrator.migrate([Migrator.coreMigrations]))[0]).toBe("core/0039_a_processing_job_has_a_lease")
          const [row] = yield* sql<{ status: string; lockedBy: string | null; error: string }>`
            SELECT status, locked_by AS "lockedBy", error FROM job_queue WHERE id = ${held!.id}`
          expect(row).toEqual({
            status: "failed",
            lockedBy: null,
            error: "processing without a lease (set by hand), so no worker held it and no rescue could return it; failed by migration 0039: retry it to run it"
          })
          expect(yield* sql`SELECT actor, event FROM audit_logs WHERE job_id = ${held!.id}`).toEqual([{ actor: "migration 0039", event: "job_failed" }])
          expect((yield* sql<{ id: string }>`SELECT id FROM requeue_failed_job(${held!.id}, 'ops', 'set by hand by mistake')`).map((job) => job.id)).toEqual([held!.id])
          const refused = yield* Effect.flip(sql`
            INSERT INTO job_queue (organization_id, job_type, status, locked_by) VALUES (${ORG}, 'dunning_run', 'processing', 'gone-worker')`)
          expect(String(refused.cause)).toContain(`violates check constraint "job_queue_processing_is_locked"`)
        }).pipe(Effect.provide(Db.layer({ url })))
      }))

    // Found by a review: each of these applied, or was refused, wrongly.
    it.scoped("two files of one number are refused, naming both; the same text with CRLF line endings is not a change", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const folder = yield* emptySet("shared_numbers")
        yield* write(folder, "0001_a.sql", "CREATE TABLE shared_numbers_a (id int);\nCREATE INDEX ON shared_numbers_a (id);\n")
        expect(yield* Migrator.migrate([folder])).toEqual(["shared_numbers/0001_a"])
        // Checked out on Windows: the same statements (its checksum differed, and start-up refused the database).
        yield* write(folder, "0001_a.sql", "\uFEFFCREATE TABLE shared_numbers_a (id int);\r\nCREATE INDEX ON shared_numbers_a (id);\r\n")
        expect(yield* Migrator.changed([folder])).toEqual([])
        expect(yield* Migrator.migrate([folder])).toEqual([])
        // Another branch's 0001, merged after the first was applied: pending said the database was current,
        // migrate that 0001_b was changed after it was applied (on an empty one, a bare primary key violation).
        yield* write(folder, "0001_b.sql", "CREATE TABLE shared_numbers_b (id int);\n")
        const expected = `migration files 0001_a.sql and 0001_b.sql of ${folder} share the number 0001: renumber one after the set's last`
        for (const check of [Migrator.pending([folder]), Migrator.changed([folder]), Migrator.migrate([folder])]) {
          expect((yield* Effect.flip(check)).message).toBe(`cannot read migrations: Error: ${expected}`)
        }
        const [table] = yield* sql<{ exists: boolean }>`SELECT to_regclass('shared_numbers_b') IS NOT NULL AS exists`
        expect(table!.exists).toBe(false)
        yield* sql`DROP TABLE shared_numbers_a`
      }))

    it.scoped("a file numbered below one applied already (merged late) is refused, nothing applied: it would run in another order than on an empty database", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const folder = yield* emptySet("late_notes")
        yield* write(folder, "0001_notes.sql", "CREATE TABLE late_notes (a int);\n")
        yield* write(folder, "0003_notes_view.sql", "CREATE VIEW late_notes_view AS SELECT * FROM late_notes;\n")
        yield* write(folder, "0004_more.sql", "CREATE TABLE late_more (id int);\n")
        expect(yield* Migrator.migrate([folder])).toEqual(["late_notes/0001_notes", "late_notes/0003_notes_view", "late_notes/0004_more"])
        // On an empty database 0002 runs before the view is made (the view gets b); here it would run after.
        yield* write(folder, "0002_notes_b.sql", "ALTER TABLE late_notes ADD COLUMN b int;\n")
        yield* write(folder, "0005_other.sql", "CREATE TABLE late_other (id int);\n")
        expect((yield* Effect.flip(Migrator.migrate([folder]))).message).toBe(
          "migration late_notes/0002_notes_b is numbered below late_notes/0004, which is applied already: " +
            "it would run after it here and before it on an empty database; renumber it after the set's last migration"
        )
        const [other] = yield* sql<{ exists: boolean }>`SELECT to_regclass('late_other') IS NOT NULL AS exists`
        expect(other!.exists).toBe(false)
        yield* sql`DROP VIEW late_notes_view`
        yield* sql`DROP TABLE late_notes, late_more`
      }))

    it.scoped("two sets whose folders share a name are refused, naming both, before anything is applied", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const folder = yield* migrationSet
        const core = join(folder, "..", "core")
        yield* Effect.promise(() => mkdir(core).then(() => writeFile(join(core, "0001_app.sql"), "CREATE TABLE app_core (id int);\n")))
        for (const run of [Migrator.migrate([Migrator.coreMigrations, core]), Migrator.pending([Migrator.coreMigrations, core])]) {
          const error = yield* Effect.flip(run)
          expect(error.message).toBe(
            `two migration sets are named "core" (${Migrator.coreMigrations}, ${core}): a set is recorded by its folder's name, so rename one folder`
          )
        }
        const [table] = yield* sql<{ exists: boolean }>`SELECT to_regclass('app_core') IS NOT NULL AS exists`
        expect(table!.exists).toBe(false)
      }))
  })
})
