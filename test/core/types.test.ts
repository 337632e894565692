// The worker's layer shows in its type what its handlers still need.
import { SqlClient } from "@effect/sql"
import { describe, expectTypeOf, it } from "@effect/vitest"
import { Context, Data, Effect, Layer, Schema } from "effect"
import { CurrentJob, Handler, type InvalidWorkerOptions, JobDefinition, JobQueue, Worker } from "../../src/index.js"
import { type LayerError, type Provided, SkiplockTest } from "../../src/testing/index.js"

class Ledger extends Context.Tag("Ledger")<Ledger, { readonly post: (cents: number) => Effect.Effect<void> }>() {}
class Mailer extends Context.Tag("Mailer")<Mailer, { readonly send: (to: string) => Effect.Effect<void> }>() {}

const Settlement = JobDefinition.make("settlement_calculation", Schema.Struct({ cents: Schema.Int }))
const Dunning = JobDefinition.make("dunning_run", Schema.Struct({ to: Schema.String }))

const settle = Handler.make(Settlement, { run: (payload) => Effect.flatMap(Ledger, (ledger) => ledger.post(payload.cents)) })
const dun = Handler.make(Dunning, { run: (payload) => Effect.flatMap(Mailer, (mailer) => mailer.send(payload.to)) })

describe("types", () => {
  it("a handler's payload is the Schema's decoded type, and its requirements show in its type", () => {
    expectTypeOf(settle).toEqualTypeOf<Handler.Handler<"settlement_calculation", { readonly cents: number }, never, Ledger>>()
  })

  it("a handler's error type comes from run, and `permanent` written after it gets that type", () => {
    class BankUnavailable extends Data.TaggedError("BankUnavailable")<{}> {}
    class MandateRevoked extends Data.TaggedError("MandateRevoked")<{}> {}
    const upload = (cents: number): Effect.Effect<void, BankUnavailable | MandateRevoked> =>
      cents < 0 ? Effect.fail(new MandateRevoked()) : Effect.fail(new BankUnavailable())
    const handler = Handler.make(Settlement, {
      run: (payload) => upload(payload.cents),
      permanent: (error) => {
        expectTypeOf(error).toEqualTypeOf<BankUnavailable | MandateRevoked>()
        return error instanceof MandateRevoked
      }
    })
    expectTypeOf(handler).toEqualTypeOf<Handler.Handler<"settlement_calculation", { readonly cents: number }, BankUnavailable | MandateRevoked, never>>()
  })

  it("enqueueJob checks the payload against the definition, literal types included", () => {
    const Export = JobDefinition.make("sepa_export", Schema.Struct({ format: Schema.Literal("pain.008", "csv") }))
    const enqueue = JobQueue.enqueueJob(Export, { format: "csv" }, { organizationId: "0190a0b0-0000-7000-8000-000000000001" })
    expectTypeOf(enqueue).toMatchTypeOf<Effect.Effect<unknown, unknown, JobQueue.JobQueue>>()
    // @ts-expect-error: "xml" is not one of the formats
    JobQueue.enqueueJob(Export, { format: "xml" }, { organizationId: "0190a0b0-0000-7000-8000-000000000001" })
  })

  it("the worker layer requires the database and the union of its handlers' requirements, and fails only on bad options", () => {
    const layer = Worker.layer({ handlers: [settle, dun] })
    // (TypeScript folds PgClient, a subtype of SqlClient, into SqlClient when it prints this union.)
    expectTypeOf(layer).toEqualTypeOf<Layer.Layer<Worker.Worker, InvalidWorkerOptions, SqlClient.SqlClient | Ledger | Mailer>>()
    const provided = layer.pipe(Layer.provide(Layer.succeed(Ledger, { post: () => Effect.void })))
    expectTypeOf(provided).toEqualTypeOf<Layer.Layer<Worker.Worker, InvalidWorkerOptions, SqlClient.SqlClient | Mailer>>()
  })

  it("CurrentJob, which the worker gives every job, is not among the requirements left to provide", () => {
    const logged = Handler.make(Settlement, {
      run: (payload) => Effect.flatMap(CurrentJob, (job) => Effect.flatMap(Ledger, (ledger) => ledger.post(payload.cents + job.attempt)))
    })
    expectTypeOf(Worker.layer({ handlers: [logged] })).toEqualTypeOf<Layer.Layer<Worker.Worker, InvalidWorkerOptions, SqlClient.SqlClient | Ledger>>()
    expectTypeOf(SkiplockTest.layer({ handlers: [logged] })).toEqualTypeOf<Layer.Layer<Provided | Ledger, LayerError, Ledger>>()
    expectTypeOf<Effect.Effect.Context<ReturnType<typeof SkiplockTest.runJob<{ readonly cents: number }, never, CurrentJob | Ledger>>>>().toEqualTypeOf<SkiplockTest | Ledger>()
  })

  it("the kit's layer provides the test what its handlers need: runJob inside it asks for nothing the layer was given", () => {
    const LedgerTest = Layer.succeed(Ledger, { post: () => Effect.void })
    const kit = SkiplockTest.layer({ handlers: [settle, dun] }).pipe(Layer.provide(LedgerTest))
    expectTypeOf(kit).toEqualTypeOf<Layer.Layer<Provided | Ledger | Mailer, LayerError, Mailer>>()
    const test = SkiplockTest.runJob(settle, { cents: 100 }).pipe(Effect.provide(kit))
    // Ledger was given to the layer; Mailer, which dun needs, is still the layer's to get.
    expectTypeOf<Effect.Effect.Context<typeof test>>().toEqualTypeOf<Mailer>()
  })
})
