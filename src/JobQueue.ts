/**
 * Enqueueing jobs. Every enqueue checks the payload against its job type's
 * Schema before it writes, and joins the caller's transaction when there is
 * one (so a job is enqueued if and only if the caller's work commits).
 * Outside a transaction, with LocalWorkers provided, an enqueue also claims
 * for a worker of this process that has free slots (see LocalWorkers.ts).
 */
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Context, Effect, Either, Exit, Layer, Option, ParseResult, Schema } from "effect"
import { InvalidJobOptions, InvalidPayload, UnknownJobType } from "./Errors.js"
import type { JobDefinition } from "./JobDefinition.js"
import { LocalWorkers, type Reservation } from "./LocalWorkers.js"
import * as DirectStatements from "./internal/directStatements.js"
import { type InsertedJob, make as makeJobStore } from "./internal/JobStore.js"
import { PREPARED } from "./internal/preparedStatements.js"
import { currentTraceParent } from "./internal/tracing.js"
import { uuidv7 } from "./internal/uuidv7.js"
import { invalidOptionsReason, isJsonObject, jsonProblem, textProblem, timestamptzText } from "./internal/validate.js"
import { LOCK_NOT_AVAILABLE, sqlErrorCode } from "./internal/sqlErrorText.js"

export interface EnqueueOptions {
  readonly organizationId: string
  /** The user who asked for the job (a UUID), if any. */
  readonly createdBy?: string | null
  /** Not before this time; default: now (the Clock's). */
  readonly runAt?: Date
  /** Default 3 (the runbook's rule). */
  readonly maxAttempts?: number
  /** Lower runs first; default 0. */
  readonly priority?: number
  /** A second enqueue with the same key (per organization) returns the first job, while that job is kept (until retention prunes it). */
  readonly idempotencyKey?: string
}

/** The runbook's call shape: `{ organizationId, jobType, payload, createdBy }`. */
export interface EnqueueInput extends EnqueueOptions {
  readonly jobType: string
  readonly payload: unknown
}

export interface EnqueuedJob {
  readonly id: string
  readonly jobType: string
  readonly organizationId: string
  /**
   * The job's status when the enqueue's statement ended: `pending`, or `processing` when a worker of this
   * process claimed it in that statement (hand-off, LocalWorkers); for an `existing` job, that job's status.
   */
  readonly status: string
  readonly runAt: Date
  readonly createdAt: Date
  readonly idempotencyKey: string | null
  readonly traceId: string
  /** True when the idempotency key matched a job enqueued before: no new job was created. */
  readonly existing: boolean
}

export type EnqueueError = UnknownJobType | InvalidPayload | InvalidJobOptions | SqlError

export class JobQueue extends Context.Tag("skiplock/JobQueue")<JobQueue, {
  /** Enqueues one job; the payload is checked against the job type's Schema when this queue knows it. */
  readonly enqueue: (input: EnqueueInput) => Effect.Effect<EnqueuedJob, EnqueueError>
  /** Enqueues many jobs in one statement: all or none. */
  readonly enqueueMany: (inputs: ReadonlyArray<EnqueueInput>) => Effect.Effect<ReadonlyArray<EnqueuedJob>, EnqueueError>
}>() {}

/** Enqueues a job of a known definition with a typed payload. */
export const enqueueJob = <A, I>(
  definition: JobDefinition<string, A, I>,
  // NoInfer: the definition alone decides A (inferred from the payload too, a literal widens to string).
  payload: NoInfer<A>,
  options: EnqueueOptions
): Effect.Effect<EnqueuedJob, EnqueueError, JobQueue> =>
  Effect.flatMap(
    Schema.encode(definition.payload)(payload).pipe(
      Effect.mapError((error) => new InvalidPayload({ jobType: definition.jobType, reason: formatParseError(error) }))
    ),
    (encoded) => Effect.flatMap(JobQueue, (queue) => queue.enqueue({ ...options, jobType: definition.jobType, payload: encoded }))
  )

/** Enqueues one job through the JobQueue service. */
export const enqueue = (input: EnqueueInput) => Effect.flatMap(JobQueue, (queue) => queue.enqueue(input))

/** Enqueues many jobs through the JobQueue service. */
export const enqueueMany = (inputs: ReadonlyArray<EnqueueInput>) => Effect.flatMap(JobQueue, (queue) => queue.enqueueMany(inputs))

export const formatParseError = (error: ParseResult.ParseError): string =>
  ParseResult.TreeFormatter.formatErrorSync(error).replace(/\s*\n\s*/g, " ")

/** A job row as the queries return it: the enqueued job without `existing`. */
type Row = Omit<EnqueuedJob, "existing">

// How often an enqueue inserts again the jobs whose key's earlier job was deleted while it looked for it.
const MAX_KEY_ROUNDS = 3

/** A checked input, ready to insert. */
const toRow = (input: EnqueueInput, payload: Record<string, unknown>, now: number) => ({
  // Generated here so that each input can be matched to its row afterwards. Time-ordered by the
  // wall clock, not the Clock: the order is for index locality, shared with the SQL default.
  id: uuidv7(Date.now()),
  // As the database writes UUIDs: a repeated idempotency key is matched to its earlier job by this text.
  organizationId: input.organizationId.toLowerCase(),
  jobType: input.jobType,
  payload,
  priority: input.priority ?? 0,
  maxAttempts: input.maxAttempts ?? 3,
  runAt: input.runAt ?? new Date(now),
  idempotencyKey: input.idempotencyKey ?? null,
  createdBy: input.createdBy?.toLowerCase() ?? null
})
type PreparedJob = ReturnType<typeof toRow>

/** A prepared job as a row of the batch insert's JSON document (jsonb_to_recordset's column names). */
const asRecord = (row: PreparedJob) => ({
  id: row.id,
  organization_id: row.organizationId,
  job_type: row.jobType,
  payload: row.payload,
  priority: row.priority,
  max_attempts: row.maxAttempts,
  run_at: timestamptzText(row.runAt),
  idempotency_key: row.idempotencyKey,
  created_by: row.createdBy
})

/** Makes the queue for the given job definitions (their Schemas check payloads). */
export const make = (definitions: ReadonlyArray<JobDefinition>) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const store = yield* makeJobStore
    // Outside a transaction, the insert goes straight to a connection of the pool (internal/directStatements.ts).
    const run = yield* DirectStatements.make
    const localWorkers = Option.getOrUndefined(yield* Effect.serviceOption(LocalWorkers))
    const schemas = new Map(definitions.map((definition) => [definition.jobType, definition.payload]))

    const registeredTypes = sql<{ name: string }>`SELECT name FROM job_types ORDER BY name`.pipe(
      Effect.map((rows) => rows.map((row) => row.name))
    )

    // The database rejects unknown types too (inserts by hand); this turns its error into ours. The
    // registered types come from the error's hint: inside the caller's transaction, which the failed
    // insert has aborted, no query could read them.
    const mapInsertError = (error: SqlError, rows: ReadonlyArray<PreparedJob>) => {
      // The database's own message, whole: a type may hold a line break or a quote.
      const message = (error.cause as { message?: unknown } | undefined)?.message
      const unknown = typeof message === "string" ? /^unknown job type "([\s\S]*)"$/.exec(message) : null
      if (unknown === null) return Effect.fail(error)
      const jobType = unknown[1]!
      // In a batch, the first input of that type.
      const index = rows.length > 1 ? rows.findIndex((row) => row.jobType === jobType) : -1
      const at = index >= 0 ? { index } : {}
      const hint = (error.cause as { hint?: unknown } | undefined)?.hint
      const listed = typeof hint === "string" ? /^registered job types: (.*)$/.exec(hint) : null
      return listed !== null
        ? Effect.fail(new UnknownJobType({ jobType, registered: listed[1]!.split(", "), ...at }))
        : Effect.flatMap(registeredTypes, (registered) => Effect.fail(new UnknownJobType({ jobType, registered, ...at })))
    }

    // Which input of a batch an error is about.
    const atInput = (error: EnqueueError, index: number): EnqueueError => {
      switch (error._tag) {
        case "UnknownJobType":
          return new UnknownJobType({ jobType: error.jobType, registered: error.registered, index })
        case "InvalidPayload":
          return new InvalidPayload({ jobType: error.jobType, reason: error.reason, index })
        case "InvalidJobOptions":
          return new InvalidJobOptions({ reason: error.reason, index })
        default:
          return error
      }
    }

    const notAnObject = (jobType: string, payload: unknown) =>
      new InvalidPayload({ jobType, reason: `the payload must be a JSON object, got ${payload === null ? "null" : Array.isArray(payload) ? "an array" : typeof payload}` })

    // Checks one input. The common case takes no Effect steps (a batch of 1,000 spent most of its Node
    // time in them); an empty job type (the error lists the registered ones) and a payload the Schema
    // cannot decode synchronously, or rejects, go through an Effect that names the problem.
    const prepare = (input: EnqueueInput, now: number): PreparedJob | Effect.Effect<PreparedJob, EnqueueError> => {
      const reason = invalidOptionsReason(input)
      if (reason !== undefined) return Effect.fail(new InvalidJobOptions({ reason }))
      // A type with a NUL or a lone surrogate cannot be registered (nor sent: the database refuses such text).
      if (typeof input.jobType !== "string" || input.jobType.length === 0 || (!schemas.has(input.jobType) && textProblem(input.jobType) !== undefined)) {
        const jobType = String(input.jobType ?? "")
        return Effect.flatMap(registeredTypes, (registered) => Effect.fail(new UnknownJobType({ jobType, registered })))
      }
      const withPayload = (payload: unknown): PreparedJob | Effect.Effect<never, InvalidPayload> => {
        if (!isJsonObject(payload)) return Effect.fail(notAnObject(input.jobType, payload))
        const problem = jsonProblem(payload)
        return problem === undefined ? toRow(input, payload, now) : Effect.fail(new InvalidPayload({ jobType: input.jobType, reason: problem }))
      }
      const schema = schemas.get(input.jobType)
      if (schema === undefined) return withPayload(input.payload)
      // A Schema that follows a cycle in the payload (a recursive one) overflows the call stack: named as the
      // payload's fault, as the worker does (executeJob). Anything else it throws is a bug, a defect as before,
      // whatever else the payload holds (a Date in a field the Schema ignores is no reason for its throw).
      const thrownBySchema = (thrown: unknown) => {
        const problem = thrown instanceof RangeError ? jsonProblem(input.payload) : undefined
        return problem === undefined ? Effect.die(thrown) : Effect.fail(new InvalidPayload({ jobType: input.jobType, reason: problem }))
      }
      // Decode then encode: validates, and stores the canonical encoded form.
      let checked: Either.Either<unknown, ParseResult.ParseError>
      try {
        checked = Either.flatMap(Schema.decodeUnknownEither(schema)(input.payload), Schema.encodeEither(schema))
      } catch (thrown) {
        return thrownBySchema(thrown)
      }
      if (Either.isRight(checked)) return withPayload(checked.right)
      return Schema.decodeUnknown(schema)(input.payload).pipe(
        Effect.flatMap(Schema.encode(schema)),
        Effect.mapError((error) => new InvalidPayload({ jobType: input.jobType, reason: formatParseError(error) })),
        Effect.catchAllDefect(thrownBySchema),
        Effect.flatMap((payload) => {
          const row = withPayload(payload)
          return Effect.isEffect(row) ? row : Effect.succeed(row)
        })
      )
    }

    // The rest of a new job's row is what was sent: parsing it back cost more than writing it.
    const returning = sql`RETURNING id, status, trace_id AS "traceId"`
    // Sent as named prepared statements (internal/preparedStatements.ts): their texts never vary.
    const preparedMark = sql.literal(PREPARED)

    const findByKeys = (keys: ReadonlyArray<{ organizationId: string; idempotencyKey: string }>) =>
      keys.length === 0
        ? Effect.succeed([] as ReadonlyArray<Row>)
        : sql<Row>`${preparedMark}
            SELECT id, job_type AS "jobType", organization_id AS "organizationId", status, run_at AS "runAt",
                   created_at AS "createdAt", idempotency_key AS "idempotencyKey", trace_id AS "traceId"
            FROM job_queue j
            JOIN unnest(${keys.map((k) => k.organizationId)}::uuid[], ${keys.map((k) => k.idempotencyKey)}::text[]) AS k(org, key)
              ON j.organization_id = k.org AND j.idempotency_key = k.key`

    // A key belongs to one job per organization, whatever its type: an enqueue must not answer with a job it did not
    // ask for (nor let an unknown type pass because its insert was skipped before the database could check it).
    const refuseKeyClash = (row: PreparedJob, owner: string, index: number | undefined): Effect.Effect<never, EnqueueError> =>
      Effect.flatMap(registeredTypes, (registered): Effect.Effect<never, EnqueueError> =>
        registered.includes(row.jobType)
          ? Effect.fail(
              new InvalidJobOptions({
                reason: `idempotencyKey ${JSON.stringify(row.idempotencyKey)} already belongs to ${owner} (keys are unique per organization, across job types)`,
                index
              })
            )
          : Effect.fail(new UnknownJobType({ jobType: row.jobType, registered, index }))
      )
    const keyOf = (job: { readonly organizationId: string; readonly idempotencyKey: string | null }) => `${job.organizationId} ${job.idempotencyKey}`

    // Before a batch is inserted (one statement, so all or none): a key that a job of another type holds, queued
    // already or earlier in the batch, refuses the whole batch.
    const checkBatchKeys = (rows: ReadonlyArray<PreparedJob>) =>
      Effect.gen(function* () {
        const keyed = rows.flatMap((row, index) => (row.idempotencyKey === null ? [] : [{ row, index }]))
        if (rows.length < 2 || keyed.length === 0) return
        const owners = new Map<string, { readonly jobType: string; readonly owner: string }>()
        const queued = yield* findByKeys(keyed.map(({ row }) => ({ organizationId: row.organizationId, idempotencyKey: row.idempotencyKey! })))
        for (const job of queued) owners.set(keyOf(job), { jobType: job.jobType, owner: `the ${job.jobType} job ${job.id} of this organization` })
        for (const { row, index } of keyed) {
          const owner = owners.get(keyOf(row))
          if (owner === undefined) owners.set(keyOf(row), { jobType: row.jobType, owner: `inputs[${index}] of this batch, a ${row.jobType} job` })
          else if (owner.jobType !== row.jobType) return yield* refuseKeyClash(row, owner.owner, index)
        }
      })

    const insertJobs = (inputs: ReadonlyArray<EnqueueInput>) =>
      Effect.gen(function* () {
        if (inputs.length === 0) return []
        const now = yield* Clock.currentTimeMillis
        const rows: Array<PreparedJob> = []
        for (const [index, input] of inputs.entries()) {
          const prepared = prepare(input, now)
          rows.push(Effect.isEffect(prepared) ? yield* (inputs.length > 1 ? Effect.mapError(prepared, (error) => atInput(error, index)) : prepared) : prepared)
        }
        yield* checkBatchKeys(rows)
        const trace = yield* currentTraceParent
        const at = new Date(now)
        // Built only when used: with a local worker to hand off to, the insert goes through enqueue_and_claim.
        const insertRows = (rows: ReadonlyArray<PreparedJob>) => Effect.suspend(() => {
          const into = sql`${preparedMark} INSERT INTO job_queue (id, organization_id, job_type, payload, priority, max_attempts, run_at,
                                                  idempotency_key, trace_id, parent_span_id, created_by, created_at, updated_at)`
          const traceId = sql`coalesce(${trace?.traceId ?? null}::text, replace(gen_random_uuid()::text, '-', ''))`
          const spanId = sql`${trace?.spanId ?? null}::text`
          const orReturnEarlier = sql`ON CONFLICT (organization_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            ${returning}`
          const [one] = rows
          // One job (the common enqueue): a plain VALUES row plans and runs faster than a set of rows.
          // A batch travels as one JSON document, which the server splits into rows: one JSON.stringify
          // instead of nine arrays escaped element by element.
          return rows.length === 1 && one !== undefined
            ? run(sql<InsertedJob>`${into}
            VALUES (${one.id}::uuid, ${one.organizationId}::uuid, ${one.jobType}, ${JSON.stringify(one.payload)}::jsonb, ${one.priority}, ${one.maxAttempts},
                    ${timestamptzText(one.runAt)}::timestamptz, ${one.idempotencyKey}::text, ${traceId}, ${spanId}, ${one.createdBy}::uuid, ${at}, ${at})
            ${orReturnEarlier}`)
            : run(sql<InsertedJob>`${into}
            SELECT r.id, r.organization_id, r.job_type, r.payload, r.priority, r.max_attempts, r.run_at, r.idempotency_key,
                   ${traceId}, ${spanId}, r.created_by, ${at}, ${at}
            FROM ROWS FROM (jsonb_to_recordset(${JSON.stringify(rows.map(asRecord))}::jsonb)
                              AS (id uuid, organization_id uuid, job_type text, payload jsonb, priority smallint,
                                  max_attempts integer, run_at timestamptz, idempotency_key text, created_by uuid))
                 WITH ORDINALITY AS r(id, organization_id, job_type, payload, priority, max_attempts, run_at, idempotency_key, created_by, ord)
            ORDER BY r.ord
            ${orReturnEarlier}`)
        })
        const insert = insertRows(rows)
        // Outside a transaction, a local worker with free slots gets the jobs due now in the same statement.
        const due = localWorkers === undefined || Option.isSome(yield* Effect.serviceOption(SqlClient.TransactionConnection))
          ? []
          : rows.filter((row) => row.runAt.getTime() <= now && localWorkers.handles(row.jobType))
        const insertAndHandOff = (reservation: Reservation, restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>) =>
          store.enqueueAndClaim(JSON.stringify(rows.map(asRecord)), { traceId: trace?.traceId ?? null, spanId: trace?.spanId ?? null }, at, reservation).pipe(
            Effect.onExit((exit) => (Exit.isSuccess(exit) ? reservation.handOff(exit.value.claimed, at) : reservation.cancel)),
            // The insert's RETURNING saw every new job pending; the ones the claim took are processing as the statement ends.
            Effect.map(({ inserted, claimed }) => {
              const taken = new Set(claimed.map((job) => job.id))
              return inserted.map((job) => (taken.has(job.id) ? { ...job, status: "processing" } : job))
            }),
            // Its insert waited on a lock for a second (JobStore, 0023): jobs claimed after a long wait would have leases
            // already running out. Inserted without a claim instead, however long that waits.
            Effect.catchIf((error) => sqlErrorCode(error) === LOCK_NOT_AVAILABLE, () => restore(insert))
          )
        const inserted = yield* (localWorkers === undefined || due.length === 0
          ? insert
          : Effect.uninterruptibleMask((restore) =>
              Effect.suspend(() => {
                const reservation = localWorkers.reserve([...new Set(due.map((row) => row.jobType))], due.length)
                // Once reserved, the claim must reach the worker: cancelling the statement could come after its commit.
                return reservation === undefined ? restore(insert) : insertAndHandOff(reservation, restore)
              })
            )
        ).pipe(Effect.catchTag("SqlError", (error) => mapInsertError(error, rows)))
        // A job whose idempotency key matched an earlier job comes back as that job.
        const byId = new Map(inserted.map((job) => [job.id, job]))
        const earlier = new Map<string, Row>()
        let duplicates = rows.filter((row) => !byId.has(row.id))
        for (let round = 1; duplicates.length > 0; round++) {
          for (const job of yield* findByKeys(duplicates.map((row) => ({ organizationId: row.organizationId, idempotencyKey: row.idempotencyKey! })))) {
            earlier.set(keyOf(job), job)
          }
          // Deleted between the insert and the look (retention pruned the finished job that held the key): the key
          // is free again, so those jobs are inserted now (a few rounds: each needs another such deletion to race).
          const vanished = duplicates.filter((row) => !earlier.has(keyOf(row)))
          if (vanished.length === 0 || round > MAX_KEY_ROUNDS) break
          for (const job of yield* insertRows(vanished).pipe(Effect.catchTag("SqlError", (error) => mapInsertError(error, vanished)))) byId.set(job.id, job)
          duplicates = vanished.filter((row) => !byId.has(row.id))
        }
        const jobs = rows.map((row): EnqueuedJob => {
          const job = byId.get(row.id)
          if (job !== undefined) {
            return {
              id: job.id,
              jobType: row.jobType,
              organizationId: row.organizationId,
              status: job.status,
              runAt: row.runAt,
              createdAt: at,
              idempotencyKey: row.idempotencyKey,
              traceId: job.traceId,
              existing: false
            }
          }
          const first = earlier.get(keyOf(row))
          // Only reachable if the key's job was deleted between insert and look MAX_KEY_ROUNDS times in a row.
          if (first === undefined) throw new Error(`job with idempotency key ${row.idempotencyKey} vanished while enqueueing`)
          return { ...first, existing: true }
        })
        // A key taken by a job of another type. For a batch only if that job was enqueued after checkBatchKeys looked:
        // its other jobs are enqueued by then.
        const [clash] = rows.flatMap((row, index) => {
          const job = jobs[index]!
          return job.existing && job.jobType !== row.jobType ? [{ row, job, index }] : []
        })
        if (clash !== undefined) {
          const { row, job, index } = clash
          return yield* refuseKeyClash(row, `the ${job.jobType} job ${job.id} of this organization`, inputs.length > 1 ? index : undefined)
        }
        return jobs
      })

    // One span per call (no stack trace: the span's name says where it comes from).
    return JobQueue.of({
      enqueue: (input) =>
        insertJobs([input]).pipe(
          Effect.map((jobs) => jobs[0]!),
          Effect.withSpan("JobQueue.enqueue", { captureStackTrace: false, attributes: { jobType: input.jobType } })
        ),
      enqueueMany: (inputs) =>
        insertJobs(inputs).pipe(Effect.withSpan("JobQueue.enqueueMany", { captureStackTrace: false, attributes: { count: inputs.length } }))
    })
  })

/** The queue, for the given job definitions. */
export const layer = (definitions: ReadonlyArray<JobDefinition>) => Layer.effect(JobQueue, make(definitions))

