/**
 * The billing module: the `billing_run` job type with its handler, the
 * rollback of a run, the demo seed, the CLI commands, and the folder of the
 * module's migrations (apply it after the core set:
 * `Migrator.migrate([Migrator.coreMigrations, billingMigrations])`).
 */
import { join } from "node:path"
import { Migrator } from "../index.js"
import { billingRun, billingRunHandler } from "./billing.service.js"

export {
  billingRun,
  billingRunHandler,
  type BillingRunError,
  type BillingRunOptions,
  type ChunkCommitted,
  DEFAULT_CHUNK_SIZE,
  isPermanentBillingError,
  makeBillingRunHandler,
  parseBillingPeriod,
  runBilling
} from "./billing.service.js"
export { billingCommand, demoCommand } from "./cli.js"
export { DEMO_ORGANIZATION_ID } from "./demoData.js"
export * as BillingDomain from "./domain.js"
export * from "./errors.js"
export { rollbackBillingRun, type RollbackResult } from "./rollback.js"
export { seedDemo, type SeedOptions, type SeedResult } from "./seed.js"

/** The billing tables' migrations (`migrations/billing`). */
export const billingMigrations = join(Migrator.migrationsRoot, "billing")

/** The job definitions to give `JobQueue.layer`. */
export const billingDefinitions = [billingRun] as const

/** The handlers to give `Worker.make`; they need `SqlClient` and `Audit`. */
export const billingHandlers = [billingRunHandler] as const
