// Finds a PostgreSQL server once per `vitest run` (DATABASE_URL, testcontainers or
// embedded) and hands its admin URL to the test workers; stops it at teardown.
// The same setup our users get from skiplock/testing.
export { setupPostgresServer as default } from "../src/testing/globalSetup.js"
