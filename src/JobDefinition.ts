/**
 * A job type's contract: its name and the Schema of its payload. Enqueuers
 * need only this; workers pair it with a handler (see Handler.ts).
 */
import { Schema } from "effect"

export interface JobDefinition<Type extends string = string, A = any, I = any> {
  readonly jobType: Type
  /** Decodes the stored JSON payload (I) into what the handler receives (A). */
  readonly payload: Schema.Schema<A, I, never>
}

/** Defines a job type with the Schema of its payload. */
export const make = <const Type extends string, A, I>(
  jobType: Type,
  payload: Schema.Schema<A, I, never>
): JobDefinition<Type, A, I> => ({ jobType, payload })

/** The decoded payload type of a definition. */
export type Payload<D> = D extends JobDefinition<string, infer A, any> ? A : never
