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

// The finding, while the constraint is there and NOT VALID.
const whileNotValid = (constraint: string, finding: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ validated: boolean }>`SELECT convalidated AS validated FROM pg_constraint WHERE conname = ${constraint}`
  ).pipe(Effect.map(([found]) => (found === undefined || found.validated ? [] : [finding])))

// The finding, once the migration that adds `constraint` has run, while the unique index it builds is missing.
const unlessIndexed = (index: string, constraint: string, finding: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ applied: boolean; indexed: boolean }>`
      SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = ${constraint}) AS applied,
             EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = ${index}) AS indexed`
  ).pipe(Effect.map(([found]) => (found?.applied === true && !found.indexed ? [finding] : [])))

/**
 * What an operator must fix in the stored billing data that a migration could not: customers stored
 * before billing 0009 whose IBAN no bank issues leave its check NOT VALID, customers stored before 0013
 * or 0016 whose mandate references break their rules, and organizations stored before 0014 or 0019 whose creditor id's
 * check digits do not match (a migration's own warning is a PostgreSQL notice nobody prints). Catalog
 * lookups, not scans: cheap at every start.
 */
export const billingDataChecks = [
  whileNotValid(
    "customers_iban_valid",
    "customers stored before billing 0009 may have an IBAN no bank issues (customers_iban_valid is NOT VALID), and billing runs " +
      "still invoice them with it: list them with SELECT id, customer_number, iban FROM customers WHERE NOT iban_is_valid(iban), " +
      "correct them, then ALTER TABLE customers VALIDATE CONSTRAINT customers_iban_valid"
  ),
  // Billing 0013: references padded with spaces or blank, and references one organization has in two cases.
  whileNotValid(
    "customers_mandate_reference_trimmed",
    "customers stored before billing 0013 may have a blank mandate reference or one with a space before or after it " +
      "(customers_mandate_reference_trimmed is NOT VALID): list them with SELECT id, customer_number, mandate_reference FROM customers " +
      "WHERE mandate_reference <> btrim(mandate_reference, ' ') OR btrim(mandate_reference, ' ') = '', correct them, then " +
      "ALTER TABLE customers VALIDATE CONSTRAINT customers_mandate_reference_trimmed"
  ),
  unlessIndexed(
    "customers_mandate_reference_unique_any_case",
    "customers_mandate_reference_trimmed",
    "customers of one organization share a mandate reference but for its case, which a bank takes for one mandate " +
      "(customers_mandate_reference_unique_any_case was not built): list them with SELECT organization_id, upper(mandate_reference), " +
      "array_agg(customer_number) FROM customers GROUP BY 1, 2 HAVING count(*) > 1, give each its own, then CREATE UNIQUE INDEX " +
      "customers_mandate_reference_unique_any_case ON customers (organization_id, upper(mandate_reference))"
  ),
  // Billing 0016: references with a '/' at either end or a '//', which banks refuse.
  whileNotValid(
    "customers_mandate_reference_slashes",
    "customers stored before billing 0016 may have a mandate reference that begins or ends with '/' or contains '//', which banks " +
      "refuse (customers_mandate_reference_slashes is NOT VALID): list them with SELECT id, customer_number, mandate_reference FROM " +
      "customers WHERE mandate_reference LIKE '/%' OR mandate_reference LIKE '%/' OR mandate_reference LIKE '%//%', correct them, then " +
      "ALTER TABLE customers VALIDATE CONSTRAINT customers_mandate_reference_slashes"
  ),
  // Billing 0014, 0019: organizations stored with a creditor id whose check digits do not match.
  whileNotValid(
    "organizations_sepa_creditor_id_valid",
    "organizations stored before billing 0014 or 0019 may have a SEPA creditor id whose check digits do not match, which a bank refuses " +
      "(organizations_sepa_creditor_id_valid is NOT VALID): list them with SELECT id, name, sepa_creditor_id FROM organizations " +
      "WHERE NOT sepa_creditor_id_is_valid(sepa_creditor_id), correct them, then " +
      "ALTER TABLE organizations VALIDATE CONSTRAINT organizations_sepa_creditor_id_valid"
  )
] as const
