/**
 * skiplock's public API: define job types and handlers, enqueue jobs, run
 * workers. Everything here is an Effect program; services (the database,
 * the audit trail, the Clock) come in as layers.
 */
export * as Audit from "./Audit.js"
export * as Db from "./Db.js"
export * from "./Errors.js"
export * as Handler from "./Handler.js"
export { CurrentJob, type JobContext } from "./JobContext.js"
export * as JobDefinition from "./JobDefinition.js"
export * as JobQueue from "./JobQueue.js"
export * as Jobs from "./Jobs.js"
export * as LocalWorkers from "./LocalWorkers.js"
export * as Metrics from "./Metrics.js"
export * as Migrator from "./Migrator.js"
export * as Worker from "./Worker.js"
export type { ClaimedJob } from "./internal/JobStore.js"
export type { Outcome } from "./internal/executeJob.js"
