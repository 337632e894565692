/**
 * Harness bookkeeping on the shared server: fresh databases per run, the
 * server's statistics views, and connections that are not counted as the
 * systems' own statements.
 */
import pg from "pg"
import { markHarness } from "./instrument.js"

export const connect = async (url: string): Promise<pg.Client> => {
  const client = markHarness(new pg.Client({ connectionString: url, application_name: "skiplock-bench" }))
  await client.connect()
  client.on("error", () => {})
  return client
}

export const databaseUrl = (serverUrl: string, database: string): string => {
  const url = new URL(serverUrl)
  url.pathname = `/${database}`
  return url.toString()
}

export const quoteIdent = (name: string): string => `"${name.replace(/"/g, '""')}"`

let sequence = 0
const created = new Set<string>()

/** A database that exists for one run of one system; `observer` is the harness's connection to it. */
export interface FreshDatabase {
  readonly name: string
  readonly url: string
  observer(): Promise<pg.Client>
  closeObserver(): Promise<void>
  drop(): Promise<void>
}

export const createFreshDatabase = async (serverUrl: string, label: string): Promise<FreshDatabase> => {
  sequence += 1
  const name = `skb_${process.pid}_${sequence}_${label}`.toLowerCase().replace(/[^a-z0-9_]/g, "_").slice(0, 63)
  const admin = await connect(serverUrl)
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`)
    await admin.query(`CREATE DATABASE ${quoteIdent(name)} TEMPLATE template0`)
  } finally {
    await admin.end()
  }
  created.add(name)
  const url = databaseUrl(serverUrl, name)
  let observer: pg.Client | undefined
  const closeObserver = async () => {
    const client = observer
    observer = undefined
    if (client !== undefined) await client.end().catch(() => {})
  }
  return {
    name,
    url,
    observer: async () => {
      observer ??= await connect(url)
      return observer
    },
    closeObserver,
    drop: async () => {
      await closeObserver()
      await dropDatabase(serverUrl, name)
    }
  }
}

/** Drops a database, terminating whatever sessions it still has. */
export const dropDatabase = async (serverUrl: string, name: string): Promise<void> => {
  const admin = await connect(serverUrl)
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`)
    created.delete(name)
  } finally {
    await admin.end()
  }
}

/**
 * After a system closed: waits up to `graceMs` (default 500 ms) for its sessions to end, then
 * terminates the ones left and returns their application names (a system
 * that leaves connections open after closing, reported by the caller).
 */
export const settleSessions = async (admin: pg.Client, database: string, graceMs = 500): Promise<Array<string>> => {
  try {
    await waitForNoSessions(admin, database, graceMs)
    return []
  } catch {
    const { rows } = await admin.query<{ app: string }>(
      `SELECT coalesce(nullif(application_name, ''), '(no application_name)') AS app, pg_terminate_backend(pid)
       FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`,
      [database]
    )
    await waitForNoSessions(admin, database, 10_000)
    return rows.map((r) => r.app)
  }
}

/** Drops every database this process created and has not dropped yet (on abort). */
export const dropAllCreated = async (serverUrl: string): Promise<void> => {
  for (const name of [...created]) {
    await dropDatabase(serverUrl, name).catch(() => {})
  }
}

/** Drops databases left by earlier harness processes that are no longer running. */
export const dropStaleDatabases = async (serverUrl: string): Promise<Array<string>> => {
  const admin = await connect(serverUrl)
  const dropped: Array<string> = []
  try {
    const { rows } = await admin.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname ~ '^skb_[0-9]+_'`)
    for (const { datname } of rows) {
      const pid = Number(datname.split("_")[1])
      if (pid === process.pid || isAlive(pid)) continue
      await admin.query(`DROP DATABASE IF EXISTS ${quoteIdent(datname)} WITH (FORCE)`)
      dropped.push(datname)
    }
  } finally {
    await admin.end()
  }
  return dropped
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

export interface ServerInfo {
  readonly version: string
  readonly settings: Record<string, string>
  readonly pgStatStatements: { readonly available: boolean; readonly detail: string }
}

export const serverInfo = async (serverUrl: string): Promise<ServerInfo> => {
  const admin = await connect(serverUrl)
  try {
    const version = (await admin.query<{ v: string }>("SELECT version() AS v")).rows[0]!.v
    const names = ["server_version", "shared_buffers", "max_connections", "synchronous_commit", "fsync", "shared_preload_libraries", "work_mem"]
    const { rows } = await admin.query<{ name: string; setting: string; unit: string | null }>(
      "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1)",
      [names]
    )
    const settings = Object.fromEntries(rows.map((r) => [r.name, r.unit ? `${r.setting} ${r.unit}` : r.setting]))
    return { version, settings, pgStatStatements: await probePgStatStatements(serverUrl) }
  } finally {
    await admin.end()
  }
}

/**
 * Whether pg_stat_statements can be used: the extension must be installable
 * and loaded through shared_preload_libraries. The harness never changes the
 * server's configuration; it only reports what it finds.
 */
const probePgStatStatements = async (serverUrl: string): Promise<{ available: boolean; detail: string }> => {
  const admin = await connect(serverUrl)
  try {
    const { rows } = await admin.query<{ installed: boolean }>(
      "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements') AS installed"
    )
    if (!rows[0]!.installed) return { available: false, detail: "extension pg_stat_statements is not installed on the server" }
    const preload = (await admin.query<{ s: string }>("SELECT current_setting('shared_preload_libraries') AS s")).rows[0]!.s
    if (!preload.split(",").map((s) => s.trim()).includes("pg_stat_statements")) {
      return {
        available: false,
        detail: `pg_stat_statements is installable but not in shared_preload_libraries (currently '${preload}'); enabling it needs a server restart, so statements are counted client-side instead`
      }
    }
    return { available: true, detail: "pg_stat_statements loaded; statements counted per database" }
  } finally {
    await admin.end()
  }
}

/** Committed and rolled-back transactions of one database, as pg_stat_database reports them. */
export const transactionCount = async (admin: pg.Client, database: string): Promise<number> => {
  await admin.query("SELECT pg_stat_clear_snapshot()")
  const { rows } = await admin.query<{ n: string }>(
    "SELECT (xact_commit + xact_rollback)::text AS n FROM pg_stat_database WHERE datname = $1",
    [database]
  )
  return Number(rows[0]?.n ?? 0)
}

/**
 * WAL flushes to disk (fsync/fdatasync calls) by the whole server so far, from pg_stat_wal
 * (PostgreSQL 14 and later; undefined before). Backends report theirs when idle or on exit,
 * so read it once the sessions being measured have ended.
 */
export const walFlushCount = async (admin: pg.Client): Promise<number | undefined> => {
  await admin.query("SELECT pg_stat_clear_snapshot()")
  try {
    const { rows } = await admin.query<{ n: string }>("SELECT wal_sync::text AS n FROM pg_stat_wal")
    return rows[0] === undefined ? undefined : Number(rows[0].n)
  } catch (error) {
    if ((error as { code?: string }).code === "42P01") return undefined // undefined_table: no pg_stat_wal
    throw error
  }
}

/**
 * Calls of top-level statements pg_stat_statements recorded in one database
 * (its own reads excluded). Connects to that database, so call it while no
 * measurement window is open.
 */
export const statementCallsServer = async (url: string): Promise<number> => {
  const client = await connect(url)
  try {
    await client.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    const { rows } = await client.query<{ n: string | null }>(
      `SELECT sum(calls)::text AS n FROM pg_stat_statements
       WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
         AND query NOT ILIKE '%pg_stat_statements%'`
    )
    return Number(rows[0]?.n ?? 0)
  } finally {
    await client.end()
  }
}

/**
 * Waits until no session is connected to the database. Backends flush their
 * statistics when they exit, so after this pg_stat_database is exact.
 */
export const waitForNoSessions = async (admin: pg.Client, database: string, timeoutMs = 15_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const { rows } = await admin.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
      [database]
    )
    if (rows[0]!.n === 0) return
    if (Date.now() > deadline) throw new Error(`sessions still connected to ${database} after ${timeoutMs} ms`)
    await sleep(25)
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
