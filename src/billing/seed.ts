/**
 * `seedDemo`: loads the demo organization (see demoData.ts) in one
 * transaction, so a newcomer can enqueue a billing run and watch it work.
 * Seeding an organization that exists already changes nothing.
 */
import { SqlClient } from "@effect/sql"
import { Clock, Console, Effect, Schema } from "effect"
import { germanDate, periodOf } from "./calendar.js"
import { demoData, DEMO_ORGANIZATION_ID } from "./demoData.js"
import { NewContract, NewCustomer } from "./domain.js"
import { InvalidBillingPeriod, InvalidSeedOptions } from "./errors.js"
import * as MasterDataRepo from "./MasterDataRepo.js"

export interface SeedOptions {
  /** Default: the demo organization's fixed id. */
  readonly organizationId?: string
  /** Default "Stadtwerke Musterstadt GmbH". */
  readonly name?: string
  /** Default 300; at most 5,000. */
  readonly customers?: number
  /** The month the contracts are arranged around; default: the current month in Germany. */
  readonly period?: string
  /** Seed of the pseudo-random data; default 2025. */
  readonly seed?: number
  /** Print what to do next (default true). */
  readonly print?: boolean
}

export interface SeedResult {
  readonly organizationId: string
  readonly name: string
  readonly period: string
  /** True when the organization existed: nothing was changed. */
  readonly alreadySeeded: boolean
  readonly customers: number
  readonly contracts: number
  readonly mix: ReturnType<typeof demoData>["mix"]
}

const nextSteps = (result: SeedResult) => {
  const org = result.organizationId
  const payload = JSON.stringify({ billingPeriod: result.period })
  return [
    result.alreadySeeded
      ? `The organization ${org} exists already; nothing was changed.`
      : `Seeded "${result.name}" (organization ${org}): ${result.customers} customers with SEPA mandates and ` +
        `${result.contracts} contracts (19 % and 7 % VAT) around ${result.period}: ${result.mix.endingInPeriod} end during ` +
        `the month, ${result.mix.startingInPeriod} start during it, ${result.mix.notYetStarted} start later, ` +
        `${result.mix.endedBefore} ended before it.`,
    "",
    "Next steps:",
    "  1. Start the service; its worker runs billing_run jobs:",
    "       npm start",
    `  2. Enqueue the billing run for ${result.period}:`,
    `       npx skiplock enqueue --org ${org} --type billing_run --payload '${payload}'`,
    "     or in SQL, as the runbook does:",
    `       psql "$DATABASE_URL" -c "INSERT INTO job_queue (organization_id, job_type, payload) VALUES ('${org}', 'billing_run', jsonb_build_object('billingPeriod', '${result.period}'))"`,
    "  3. Watch it work:",
    `       npx skiplock jobs list --org ${org}`,
    `       SELECT id, status, chunks_committed, customers_processed, invoices_created, gross_total_cents FROM billing_runs WHERE organization_id = '${org}';`,
    `       SELECT event, details FROM audit_logs WHERE organization_id = '${org}' ORDER BY id;`,
    "  4. Roll it back (docs/ROLLBACK_PLAYBOOK.md):",
    `       npx skiplock billing rollback <billing_runs.id> --reason "demo"`
  ].join("\n")
}

/** Seeds the demo organization and prints what to do next. */
export const seedDemo = (options: SeedOptions = {}) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const repo = yield* MasterDataRepo.make
    const now = new Date(yield* Clock.currentTimeMillis)
    const periodInput = options.period ?? germanDate(now.getTime()).slice(0, 7)
    const period = periodOf(periodInput)
    if (period === undefined) return yield* new InvalidBillingPeriod({ input: periodInput })
    const count = options.customers ?? 300
    if (!Number.isInteger(count) || count < 1 || count > 5000) {
      return yield* new InvalidSeedOptions({ reason: `customers must be a whole number from 1 to 5000, got ${count}` })
    }
    const organizationId = options.organizationId ?? DEMO_ORGANIZATION_ID
    if (!Schema.is(Schema.UUID)(organizationId)) {
      return yield* new InvalidSeedOptions({ reason: `organization id must be a UUID, got "${organizationId}"` })
    }
    const data = demoData({
      organizationId,
      name: options.name ?? "Stadtwerke Musterstadt GmbH",
      customers: count,
      period,
      seed: options.seed ?? 2025
    })
    // Generated data that fails the domain Schemas is a bug in the generator.
    const customers = yield* Schema.decodeUnknown(Schema.Array(NewCustomer))(data.customers).pipe(Effect.orDie)
    const contracts = yield* Schema.decodeUnknown(Schema.Array(NewContract))(data.contracts).pipe(Effect.orDie)

    const result = yield* sql.withTransaction(
      Effect.gen(function* () {
        const created = yield* repo.insertOrganization(data.organization, now)
        if (!created) return { alreadySeeded: true, customers: 0, contracts: 0 }
        yield* repo.insertCustomers(organizationId, customers, now)
        const inserted = yield* repo.insertContracts(organizationId, contracts, now)
        if (inserted !== contracts.length) return yield* Effect.dieMessage(`stored ${inserted} of ${contracts.length} demo contracts`)
        return { alreadySeeded: false, customers: customers.length, contracts: inserted }
      })
    )
    const seeded: SeedResult = { organizationId, name: data.organization.name, period: period.period, mix: data.mix, ...result }
    if (options.print !== false) yield* Console.log(nextSteps(seeded))
    return seeded
  }).pipe(Effect.withSpan("billing.seedDemo"))
