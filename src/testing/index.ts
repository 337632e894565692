/**
 * `skiplock/testing`: the kit for testing handlers against a real PostgreSQL
 * on the TestClock (SkiplockTest), and the database chain beneath it
 * (TestDatabase, PostgresServer) for tests that need only a database.
 */
export {
  type DrainOptions,
  type EnqueuedAssertion,
  HandlerNotWaiting,
  type HandlerWaitingOptions,
  JobAlreadyEnqueued,
  type LayerError,
  type Provided,
  type RunJobOptions,
  SkiplockTest,
  SkiplockTestSetupError,
  type SkiplockTestOptions,
  type SkiplockTestService,
  TEST_ORGANIZATION_ID,
  TEST_WORKER_ID
} from "./SkiplockTest.js"
export { type DrainedJob, DrainLimitExceeded, type DrainResult, type JobAttempt, WaitReason } from "./Drain.js"
export { type DeepPartial, EnqueuedAssertionError, type JobFilter } from "./JobMatch.js"
export type { JobRecord, JobStatus } from "./JobRecords.js"
export type { JobTypeRef } from "./Faults.js"
export { TestDatabase, type TestDatabaseInfo, type TestDatabaseOptions } from "./TestDatabase.js"
export { setupPostgresServer } from "./globalSetup.js"
export { NoPostgresServer, PostgresServer, type PostgresServerInfo, type PostgresServerOptions } from "./PostgresServer.js"
