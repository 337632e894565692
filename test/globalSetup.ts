// Finds a PostgreSQL server once per `vitest run` (DATABASE_URL, testcontainers or
// embedded) and hands its admin URL to the test workers; stops it at teardown.
import { startPostgresServer } from "../src/testing/PostgresServer.js"
import { ADMIN_URL_ENV } from "../src/testing/TestDatabase.js"

export default async function setup(): Promise<() => Promise<void>> {
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
