/** Carries the enqueuer's trace into the job: the ids stored with a job and the span it runs in. */
import { Effect, Option, Tracer } from "effect"
import { randomBytes } from "node:crypto"

const TRACE_ID = /^[0-9a-f]{32}$/
const SPAN_ID = /^[0-9a-f]{16}$/

/** The current span's W3C ids, when there is a span with valid ones (the no-op tracer has none). */
export const currentTraceParent = Effect.map(Effect.currentSpan.pipe(Effect.option), (span) =>
  Option.isSome(span) && TRACE_ID.test(span.value.traceId) && SPAN_ID.test(span.value.spanId)
    ? { traceId: span.value.traceId, spanId: span.value.spanId }
    : undefined
)

/** The parent of a job's span: the enqueuer's span when known, else a root in the job's own trace. */
export const jobParentSpan = (traceId: string, parentSpanId: string | null): Tracer.ExternalSpan =>
  Tracer.externalSpan({ traceId, spanId: parentSpanId ?? randomBytes(8).toString("hex"), sampled: true })
