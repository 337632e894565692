// The README's "Testing your handlers" example, run as written: it imports
// skiplock and skiplock/testing by their package names, as a user's tests do.
import { describe, expect, it } from "@effect/vitest"
import { Clock, Context, Data, Duration, Effect, Layer, Schema } from "effect"
import { fileURLToPath } from "node:url"
import { Handler, JobDefinition, JobQueue } from "skiplock"
import { SkiplockTest } from "skiplock/testing"

// ---- the application's code -------------------------------------------------

class MailerDown extends Data.TaggedError("MailerDown")<{ readonly message: string }> {}

class Mailer extends Context.Tag("app/Mailer")<Mailer, {
  readonly send: (to: string, subject: string) => Effect.Effect<void, MailerDown>
}>() {}

const SendReceipt = JobDefinition.make("send_receipt", Schema.Struct({ invoiceId: Schema.String, email: Schema.String }))
const ArchiveReceipt = JobDefinition.make("archive_receipt", Schema.Struct({ invoiceId: Schema.String }))

const sendReceipt = Handler.make(SendReceipt, {
  run: (payload, job) =>
    Effect.gen(function* () {
      const mailer = yield* Mailer
      yield* mailer.send(payload.email, `Your receipt for ${payload.invoiceId}`)
      yield* JobQueue.enqueueJob(ArchiveReceipt, { invoiceId: payload.invoiceId }, { organizationId: job.organizationId })
    })
})

const archived: Array<string> = []
const archiveReceipt = Handler.make(ArchiveReceipt, { run: (payload) => Effect.sync(() => archived.push(payload.invoiceId)) })

/** The code under test: paying an invoice enqueues its receipt. */
const payInvoice = (organizationId: string, invoiceId: string, email: string) =>
  JobQueue.enqueueJob(SendReceipt, { invoiceId, email }, { organizationId })

// ---- its tests ----------------------------------------------------------------

const ORG = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
const sent: Array<string> = []
const MailerTest = Layer.succeed(Mailer, { send: (to, subject) => Effect.sync(() => sent.push(`${to}: ${subject}`)) })

// A fresh database per test (core migrations, then ours), on the TestClock; dropped after the test.
const kit = SkiplockTest.layer({
  handlers: [sendReceipt, archiveReceipt],
  migrations: [fileURLToPath(new URL("./fixtures/receipts", import.meta.url))]
}).pipe(Layer.provide(MailerTest))

describe("receipts", () => {
  it.effect("paying an invoice enqueues its receipt", () =>
    Effect.gen(function* () {
      yield* payInvoice(ORG, "INV-1", "ada@example.com")
      yield* SkiplockTest.assertEnqueued({ jobType: SendReceipt, organizationId: ORG, payload: { invoiceId: "INV-1" } })
      yield* SkiplockTest.assertNotEnqueued({ jobType: ArchiveReceipt })
    }).pipe(Effect.provide(kit)))

  it.effect("the receipt goes out once the mailer is back, 30 s + 120 s later, and is then archived", () =>
    Effect.gen(function* () {
      sent.length = 0
      yield* SkiplockTest.failNext(sendReceipt, 2, new MailerDown({ message: "SMTP 421: try again later" }))
      yield* payInvoice(ORG, "INV-2", "ada@example.com")

      const result = yield* SkiplockTest.drain({ maxAdvance: "10 minutes" })

      expect(result.completed.map((drained) => drained.job.jobType)).toEqual(["send_receipt", "archive_receipt"])
      expect(result.completed[0]!.attempts.map((attempt) => attempt.outcome._tag)).toEqual(["RetryScheduled", "RetryScheduled", "Completed"])
      expect(Duration.toSeconds(result.advanced)).toBe(150)
      expect(sent).toEqual(["ada@example.com: Your receipt for INV-2"])
      expect(archived).toContain("INV-2")
    }).pipe(Effect.provide(kit)))

  it.effect("one attempt that fails schedules its retry 30 s later", () =>
    Effect.gen(function* () {
      const down = Layer.succeed(Mailer, { send: () => Effect.fail(new MailerDown({ message: "SMTP 421: try again later" })) })
      const run = yield* SkiplockTest.runJob(sendReceipt, { invoiceId: "INV-3", email: "ada@example.com" }).pipe(Effect.provide(down))
      const now = yield* Clock.currentTimeMillis
      expect(run.outcome).toEqual(expect.objectContaining({ _tag: "RetryScheduled", error: "MailerDown: SMTP 421: try again later", runAt: new Date(now + 30_000) }))
    }).pipe(Effect.provide(kit)))

  it.effect("in inline mode, paying an invoice mails the receipt before it returns", () =>
    Effect.gen(function* () {
      sent.length = 0
      const job = yield* SkiplockTest.inline(payInvoice(ORG, "INV-4", "ada@example.com"))
      expect(job.status).toBe("completed")
      expect(sent).toEqual(["ada@example.com: Your receipt for INV-4"])
      expect(archived).toContain("INV-4") // the archive job its handler enqueued ran inline too
    }).pipe(Effect.provide(kit)))
})
