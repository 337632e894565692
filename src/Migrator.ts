/**
 * Applies the plain numbered `.sql` files of one or more migration sets, in
 * order, all in one transaction (all or nothing, serialised by an advisory
 * lock, giving up a lock wait after a few seconds), and records them in
 * `skiplock_migrations`.
 * A set is a folder such as `migrations/core`; sets apply in the order given.
 */
import { SqlClient } from "@effect/sql"
import { Data, Duration, Effect } from "effect"
import { createHash } from "node:crypto"
import { readdirSync, readFileSync } from "node:fs"
import { basename, dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { setLocalLockTimeout } from "./internal/lockTimeout.js"
import { LOCK_NOT_AVAILABLE, sqlErrorCode, sqlErrorText } from "./internal/sqlErrorText.js"

export class MigrationError extends Data.TaggedError("MigrationError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

export interface Migration {
  readonly set: string
  readonly version: number
  readonly name: string
  readonly sql: string
  readonly checksum: string
}

/** The repository's `migrations/` folder, wherever the code runs from. */
export const migrationsRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "migrations")

/** The core runtime's tables and functions. */
export const coreMigrations = join(migrationsRoot, "core")

const FILE_PATTERN = /^(\d{4})_([a-z0-9_]+)\.sql$/

// The text a checksum is taken of: a checkout that turned line endings into CRLF (or added a byte order mark)
// holds the same statements, and must not count as a migration changed after it was applied.
const canonicalText = (sql: string) => sql.replace(/^\uFEFF/, "").replace(/\r\n/g, "\n")

/** Reads a migration set from a folder; file names are `NNNN_name.sql`, each number once. */
export const readMigrationSet = (folder: string): ReadonlyArray<Migration> => {
  const set = basename(folder)
  const migrations = readdirSync(folder)
    .filter((file) => file.endsWith(".sql"))
    .sort()
    .map((file) => {
      const match = FILE_PATTERN.exec(file)
      if (match === null) {
        throw new Error(`migration file ${join(folder, file)} is not named NNNN_name.sql`)
      }
      const sql = readFileSync(join(folder, file), "utf8")
      return {
        set,
        version: Number(match[1]),
        name: match[2]!,
        sql,
        checksum: createHash("sha256").update(canonicalText(sql)).digest("hex")
      }
    })
  // Two branches that each added "the next" migration: the ledger knows a migration by its number alone.
  for (let i = 1; i < migrations.length; i++) {
    const [before, after] = [migrations[i - 1]!, migrations[i]!]
    if (before.version === after.version) {
      throw new Error(`migration files ${fileName(before)} and ${fileName(after)} of ${folder} share the number ${String(after.version).padStart(4, "0")}: renumber one after the set's last`)
    }
  }
  return migrations
}

const fileName = (migration: Migration) => `${String(migration.version).padStart(4, "0")}_${migration.name}.sql`

// A set is known by its folder's name in skiplock_migrations: two folders of one name would share versions.
const sameNamedSets = (folders: ReadonlyArray<string>): string | undefined => {
  const byName = new Map<string, Set<string>>()
  for (const folder of folders.map((path) => resolve(path))) {
    const paths = byName.get(basename(folder)) ?? new Set<string>()
    byName.set(basename(folder), paths.add(folder))
  }
  for (const [name, paths] of byName) {
    if (paths.size > 1) return `two migration sets are named "${name}" (${[...paths].join(", ")}): a set is recorded by its folder's name, so rename one folder`
  }
  return undefined
}

const loadSets = (folders: ReadonlyArray<string>) =>
  Effect.suspend(() => {
    const clash = sameNamedSets(folders)
    return clash !== undefined
      ? Effect.fail(new MigrationError({ message: clash }))
      : Effect.try({
          try: () => folders.flatMap(readMigrationSet),
          catch: (cause) => new MigrationError({ message: `cannot read migrations: ${String(cause)}`, cause })
        })
  })

// Serialises concurrent migrators (two services starting at once).
const MIGRATION_LOCK_ID = 7_531_001

const ensureLedger = (sql: SqlClient.SqlClient) =>
  sql`CREATE TABLE IF NOT EXISTS skiplock_migrations (
        set_name   text NOT NULL,
        version    integer NOT NULL,
        name       text NOT NULL,
        checksum   text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (set_name, version)
      )`

const appliedVersions = (sql: SqlClient.SqlClient) =>
  sql<{ setName: string; version: number; checksum: string }>`
    SELECT set_name AS "setName", version, checksum FROM skiplock_migrations`

const key = (set: string, version: number) => `${set}/${String(version).padStart(4, "0")}`


export interface MigrateOptions {
  /**
   * How long a migration may wait for a lock (a table an ALTER must have to itself) before all of them
   * are given up. Waiting, it would hold up every statement on that table, claims and reads included,
   * behind another session's open transaction. Default 5 s.
   */
  readonly lockTimeout?: Duration.DurationInput
}

/** Applies every migration of the given sets that is not applied yet. Returns what it applied. */
export const migrate = (folders: ReadonlyArray<string>, options: MigrateOptions = {}) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const migrations = yield* loadSets(folders)
    const lockTimeout = Duration.decode(options.lockTimeout ?? "5 seconds")
    return yield* sql.withTransaction(
      Effect.gen(function* () {
        yield* sql`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_ID})`
        yield* setLocalLockTimeout(sql, lockTimeout)
        yield* ensureLedger(sql)
        const ledger = yield* appliedVersions(sql)
        const applied = new Map(ledger.map((row) => [key(row.setName, row.version), row]))
        // A file numbered below one applied already (merged late) would run after it here, and before it on an empty
        // database: the same files, two schemas. Refused, before anything is applied.
        const highest = new Map<string, number>()
        for (const row of ledger) highest.set(row.setName, Math.max(highest.get(row.setName) ?? 0, row.version))
        const late = migrations.find((migration) => !applied.has(key(migration.set, migration.version)) && migration.version < (highest.get(migration.set) ?? 0))
        if (late !== undefined) {
          return yield* new MigrationError({
            message: `migration ${named(late)} is numbered below ${key(late.set, highest.get(late.set)!)}, which is applied already: ` +
              "it would run after it here and before it on an empty database; renumber it after the set's last migration"
          })
        }
        const done: Array<string> = []
        for (const migration of migrations) {
          const previous = applied.get(key(migration.set, migration.version))
          if (previous !== undefined) {
            if (previous.checksum !== migration.checksum) {
              return yield* new MigrationError({
                message: `migration ${key(migration.set, migration.version)}_${migration.name} was changed after it was applied; add a new migration instead`
              })
            }
            continue
          }
          yield* sql.unsafe(migration.sql).raw.pipe(
            Effect.mapError((cause) =>
              new MigrationError({
                message: `migration ${key(migration.set, migration.version)}_${migration.name} failed: ${sqlErrorText(cause)}` +
                  (sqlErrorCode(cause) === LOCK_NOT_AVAILABLE
                    ? `; it waited ${Duration.format(lockTimeout)} for a lock another session holds (an open transaction: see pg_stat_activity), ` +
                      "and nothing was applied; run it again once that session has ended"
                    : ""),
                cause
              })
            )
          )
          yield* sql`INSERT INTO skiplock_migrations (set_name, version, name, checksum)
                     VALUES (${migration.set}, ${migration.version}, ${migration.name}, ${migration.checksum})`
          done.push(named(migration))
        }
        return done
      })
    )
  }).pipe(
    Effect.catchTag("SqlError", (cause) =>
      Effect.fail(new MigrationError({ message: `cannot apply migrations: ${sqlErrorText(cause)}`, cause }))
    ),
    Effect.withSpan("Migrator.migrate")
  )

// The given sets' migrations beside what the ledger says was applied (by version, its checksum).
const withLedger = <A>(folders: ReadonlyArray<string>, compare: (migrations: ReadonlyArray<Migration>, applied: ReadonlyMap<string, string>) => A) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const migrations = yield* loadSets(folders)
    const [ledger] = yield* sql<{ exists: boolean }>`SELECT to_regclass('skiplock_migrations') IS NOT NULL AS exists`
    const applied = ledger?.exists === true ? yield* appliedVersions(sql) : []
    return compare(migrations, new Map(applied.map((row) => [key(row.setName, row.version), row.checksum])))
  }).pipe(
    Effect.catchTag("SqlError", (cause) =>
      Effect.fail(new MigrationError({ message: `cannot read the migration ledger: ${sqlErrorText(cause)}`, cause }))
    )
  )

const named = (migration: Migration) => `${key(migration.set, migration.version)}_${migration.name}`

/**
 * The applied migrations of the given sets whose file is no longer the text that was applied (its checksum
 * differs): the database runs SQL the code does not expect. `migrate` refuses to go on past one; start-up too.
 */
export const changed = (folders: ReadonlyArray<string>) =>
  withLedger(folders, (migrations, applied) =>
    migrations.filter((migration) => (applied.get(key(migration.set, migration.version)) ?? migration.checksum) !== migration.checksum).map(named))

/** The migrations of the given sets that are not applied yet (empty when the database is current). */
export const pending = (folders: ReadonlyArray<string>) =>
  withLedger(folders, (migrations, applied) => migrations.filter((migration) => !applied.has(key(migration.set, migration.version))).map(named))
