// A tracer that notes the name of every span started through it, for tests that check
// which way a statement went (@effect/sql makes a `sql.execute` span; the direct path none).
import { Effect, Tracer } from "effect"

/** The current tracer, wrapped so that it notes span names in `names`. */
export const notingTracer = Effect.map(Effect.tracer, (base) => {
  const names: Array<string> = []
  const tracer = Tracer.make({
    span: (...args: Parameters<Tracer.Tracer["span"]>) => {
      names.push(args[0])
      return base.span(...args)
    },
    context: base.context
  })
  return { tracer, names }
})
