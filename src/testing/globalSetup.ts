/**
 * A vitest globalSetup that finds (or starts) one PostgreSQL server per test
 * run and hands it to every test file, so that each SkiplockTest or
 * TestDatabase layer only creates a database on it instead of looking for a
 * server again. Use it as `export { setupPostgresServer as default } from "skiplock/testing"`.
 */
import { startPostgresServer } from "./PostgresServer.js"
import { ADMIN_URL_ENV } from "./TestDatabase.js"

/** Finds a server (DATABASE_URL, testcontainers, embedded) and returns its teardown. */
export const setupPostgresServer = async (): Promise<() => Promise<void>> => {
  const preset = process.env[ADMIN_URL_ENV]
  if (preset !== undefined && preset !== "") return async () => undefined
  const server = await startPostgresServer()
  process.env[ADMIN_URL_ENV] = server.adminUrl
  console.log(`[skiplock] tests use ${server.description}`)
  return async () => {
    delete process.env[ADMIN_URL_ENV]
    await server.stop()
  }
}
