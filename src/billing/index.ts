/**
 * The billing module: the `billing_run` job type with its handler, the
 * rollback of a run, the demo seed, the CLI commands, and the folder of the
 * module's migrations (apply it after the core set:
 * `Migrator.migrate([Migrator.coreMigrations, billingMigrations])`).
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"
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

/**
 * What an operator must fix in the stored billing data that a migration could not: customers stored
 * before billing 0009 whose IBAN no bank issues leave its check NOT VALID, and before 0013 customers whose
 * mandate references break its rules (the migration's own warning
 * is a PostgreSQL notice nobody prints). A catalog lookup, not a scan: cheap at every start.
 */
export const billingDataChecks = [
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ validated: boolean }>`SELECT convalidated AS validated FROM pg_constraint WHERE conname = 'customers_iban_valid'`
  ).pipe(
    Effect.map(([constraint]) =>
      constraint === undefined || constraint.validated
        ? []
        : [
            "customers stored before billing 0009 may have an IBAN no bank issues (customers_iban_valid is NOT VALID), and billing runs " +
              "still invoice them with it: list them with SELECT id, customer_number, iban FROM customers WHERE NOT iban_is_valid(iban), " +
              "correct them, then ALTER TABLE customers VALIDATE CONSTRAINT customers_iban_valid"
          ]
    )
  ),
  // Billing 0013: references padded with spaces or blank, and references one organization has in two cases.
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ validated: boolean | null; indexed: boolean }>`
      SELECT (SELECT convalidated FROM pg_constraint WHERE conname = 'customers_mandate_reference_trimmed') AS validated,
             EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = 'customers_mandate_reference_unique_any_case') AS indexed`
  ).pipe(
    Effect.map(([found]) => [
      ...(found?.validated === false
        ? [
            "customers stored before billing 0013 may have a blank mandate reference or one with a space before or after it " +
              "(customers_mandate_reference_trimmed is NOT VALID): list them with SELECT id, customer_number, mandate_reference FROM customers " +
              "WHERE mandate_reference <> btrim(mandate_reference, ' ') OR btrim(mandate_reference, ' ') = '', correct them, then " +
              "ALTER TABLE customers VALIDATE CONSTRAINT customers_mandate_reference_trimmed"
          ]
        : []),
      ...(found?.validated !== null && found?.indexed === false
        ? [
            "customers of one organization share a mandate reference but for its case, which a bank takes for one mandate " +
              "(customers_mandate_reference_unique_any_case was not built): list them with SELECT organization_id, upper(mandate_reference), " +
              "array_agg(customer_number) FROM customers GROUP BY 1, 2 HAVING count(*) > 1, give each its own, then CREATE UNIQUE INDEX " +
              "customers_mandate_reference_unique_any_case ON customers (organization_id, upper(mandate_reference))"
          ]
        : [])
    ])
  )
] as const
