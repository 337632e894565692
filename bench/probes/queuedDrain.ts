/** What the drain probes share: a fresh database with `jobs` queued, the system open on it, then dropped. */
import type pg from "pg"
import { createFreshDatabase } from "../db.js"
import { processCpuMicros, serverCpuMicros, serverIsLocal } from "../cpu.js"
import { statementCount } from "../instrument.js"
import { drain, enqueueAll, poolSizeFor } from "../scenarios/common.js"
import type { SystemAdapter, SystemInstance } from "../systems/types.js"

export const withQueuedJobs = async <A>(
  serverUrl: string,
  label: string,
  system: SystemAdapter,
  options: { readonly jobs: number; readonly concurrency: number },
  f: (instance: SystemInstance, observer: pg.Client) => Promise<A>
): Promise<A> => {
  const db = await createFreshDatabase(serverUrl, `${label}_${system.id}`)
  try {
    await system.install(db.url)
    const instance = await system.open(db.url, { poolSize: poolSizeFor(options.concurrency) })
    try {
      await enqueueAll(instance, options.jobs, 1000)
      return await f(instance, await db.observer())
    } finally {
      await instance.close()
    }
  } finally {
    await db.drop()
  }
}

/** A drain with the CPU time this Node process and the local PostgreSQL server spent meanwhile, in µs. */
export const drainWithCpu = async (
  system: SystemAdapter,
  instance: SystemInstance,
  observer: pg.Client,
  options: { readonly jobs: number; readonly concurrency: number }
) => {
  const node0 = processCpuMicros()
  const server0 = serverCpuMicros()!
  const result = await drain(system, instance, observer, { ...options, timeoutMs: 60_000, statementCount })
  return { result, nodeMicros: processCpuMicros() - node0, serverMicros: serverCpuMicros()! - server0 }
}

/**
 * The server URL for a probe that reads the server's CPU time ($DATABASE_URL or the local default); exits
 * with a message when that time cannot be read: it comes from /proc, so the server must run on this host.
 */
export const localServerUrl = (probe: string): string => {
  const serverUrl = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres"
  if (!serverIsLocal(serverUrl) || serverCpuMicros() === undefined) {
    console.error(`${probe}: the server's CPU time is read from /proc, so it must run on this host (${serverUrl} does not, or its processes are not readable)`)
    process.exit(2)
  }
  return serverUrl
}
