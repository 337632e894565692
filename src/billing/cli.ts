/**
 * The billing commands for the main CLI, which mounts them:
 *
 *   npx skiplock billing rollback <runId> --reason "..." [--actor <uuid>]
 *   npx skiplock demo seed [--customers 300] [--period YYYY-MM] [--organization <uuid>]
 *
 * They need only a `SqlClient`. A refusal or any other failure is a failing
 * effect whose error message says what happened (the main CLI exits with 1).
 */
import { Args, Command, HelpDoc, Options, ValidationError } from "@effect/cli"
import { Console, Effect, Option, Schema } from "effect"
import { userInfo } from "node:os"
import { Audit } from "../index.js"
import { periodOf } from "./calendar.js"
import { formatEuro } from "./money.js"
import { rollbackBillingRun } from "./rollback.js"
import { seedDemo } from "./seed.js"

const isUuid = Schema.is(Schema.UUID)
const invalid = (message: string) => ValidationError.invalidValue(HelpDoc.p(message))

const defaultActor = () => {
  try {
    return `cli:${userInfo().username}`
  } catch {
    return "cli"
  }
}

const rollback = Command.make(
  "rollback",
  {
    runId: Args.text({ name: "runId" }).pipe(
      Args.mapEffect((value) =>
        isUuid(value) ? Effect.succeed(value) : Effect.fail(HelpDoc.p(`the billing run id must be a UUID (billing_runs.id), got ${JSON.stringify(value)}`))
      ),
      Args.withDescription("The billing run to roll back (billing_runs.id).")
    ),
    reason: Options.text("reason").pipe(
      // The audit log cannot be edited afterwards: an empty reason is a usage error, as for `jobs fail`.
      Options.mapEffect((value) => (value.trim() === "" ? Effect.fail(invalid("--reason must not be empty")) : Effect.succeed(value.trim()))),
      Options.withDescription("Why it is rolled back; stored on the run, its invoices and in the audit log.")
    ),
    actor: Options.text("actor").pipe(
      Options.withSchema(Schema.UUID),
      Options.withDescription("The UUID of the person responsible (default: cli:<os user>)."),
      Options.optional
    )
  },
  ({ runId, reason, actor }) =>
    Effect.gen(function* () {
      const result = yield* rollbackBillingRun({ runId, reason, actor: Option.getOrElse(actor, defaultActor) })
      yield* Console.log(
        [
          `Billing run ${result.runId} (${result.billingPeriod}) is rolled back.`,
          `  Cancelled ${result.invoicesCancelled} invoice(s)` +
            (result.firstInvoiceNumber === null
              ? ""
              : result.otherRunsNumbersInRange === 0
              ? ` ${result.firstInvoiceNumber} … ${result.lastInvoiceNumber}`
              : ` between ${result.firstInvoiceNumber} and ${result.lastInvoiceNumber}`) +
            `, ${formatEuro(result.grossCents)} gross (${formatEuro(result.netCents)} net + ${formatEuro(result.vatCents)} VAT).`,
          // Operators tell customers which numbers are void: a range with other runs' live invoices in it would be wrong.
          ...(result.otherRunsNumbersInRange === 0 ? [] : [
            `  Not one range: ${result.otherRunsNumbersInRange} number(s) between them belong to other runs, not cancelled by this rollback ` +
              `(the cancelled ones form ${result.invoiceNumberRanges} ranges). Exactly the cancelled numbers:`,
            `    ${result.cancelledNumbersQuery}`
          ]),
          "  Their numbers stay used. The run can now be billed again by enqueueing a new billing_run job.",
          ...result.otherRunsWithInvoices.map((other) =>
            `  Note: run ${other.runId} (${other.status}) of the same period still has ${other.invoices} live invoice(s); ` +
              "billing the month again skips those customers: roll it back too if its invoices are wrong (playbook, section 8)."
          ),
          `  Audit: SELECT * FROM audit_logs WHERE job_id = '${result.jobId}' ORDER BY id;`
        ].join("\n")
      )
    }).pipe(Effect.provide(Audit.layer))
).pipe(
  Command.withDescription(
    "Roll back a billing run: cancel its invoices (numbers stay used) and mark it rolled back, in one transaction. " +
      "Refused when any of its invoices is exported to SEPA or paid (see docs/ROLLBACK_PLAYBOOK.md)."
  )
)

/**
 * A command group run without one of its commands: a usage error (exit 2), as the main CLI's own groups.
 * (The same as the main CLI's: a job type's module does not import the service's.)
 */
const missingCommand = (group: string) =>
  Effect.zipRight(
    Console.error(`skiplock: missing command; \`skiplock ${group} --help\` lists them`),
    Effect.fail(ValidationError.missingSubcommand(HelpDoc.p("missing command")))
  )

/** `billing rollback <runId> --reason "..." [--actor <uuid>]` */
export const billingCommand = Command.make("billing", {}, () => missingCommand("billing")).pipe(
  Command.withDescription("Billing runs (the billing_run job type)."),
  Command.withSubcommands([rollback])
)

const seed = Command.make(
  "seed",
  {
    // Out of range or not a month is a usage error (exit 2), as for the jobs commands.
    customers: Options.integer("customers").pipe(
      Options.withDefault(300),
      Options.mapEffect((count) =>
        count >= 1 && count <= 5000 ? Effect.succeed(count) : Effect.fail(invalid(`--customers must be from 1 to 5000, got ${count}`))
      ),
      Options.withDescription("How many customers (1 to 5000).")
    ),
    period: Options.text("period").pipe(
      Options.mapEffect((period) =>
        periodOf(period) !== undefined ? Effect.succeed(period) : Effect.fail(invalid(`--period must be a month as YYYY-MM, got ${JSON.stringify(period)}`))
      ),
      Options.optional,
      Options.withDescription("The month (YYYY-MM) the contracts are arranged around; default: the current month.")
    ),
    organization: Options.text("organization").pipe(
      Options.withSchema(Schema.UUID),
      Options.optional,
      Options.withDescription("The organization's id (default: the demo organization's fixed id).")
    )
  },
  ({ customers, period, organization }) =>
    seedDemo({
      customers,
      ...(Option.isSome(period) ? { period: period.value } : {}),
      ...(Option.isSome(organization) ? { organizationId: organization.value } : {})
    }).pipe(Effect.asVoid)
).pipe(Command.withDescription("Load a demo organization with a few hundred customers and contracts, then print what to do next."))

/** `demo seed [--customers n] [--period YYYY-MM] [--organization <uuid>]` */
export const demoCommand = Command.make("demo", {}, () => missingCommand("demo")).pipe(
  Command.withDescription("Demo data for trying skiplock out."),
  Command.withSubcommands([seed])
)
