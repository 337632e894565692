/**
 * `Layer.launch`, except that the layer's scope is closed in a fresh fiber.
 * On SIGTERM the main fiber is interrupted; finalizers that wait with an
 * interruptible timeout (the worker's drain, stopping the embedded server)
 * would be cut short at once if they ran in that fiber, and running jobs
 * would be neither awaited nor released. A fiber that nobody interrupts runs
 * them to the end; a second signal still exits at once (see signals.ts).
 */
import { Effect, Fiber, Layer, Scope } from "effect"

export const launch = <E, R>(layer: Layer.Layer<never, E, R>): Effect.Effect<never, E, R> =>
  Effect.acquireUseRelease(
    Scope.make(),
    (scope) => Effect.zipRight(Layer.buildWithScope(layer, scope), Effect.never),
    (scope, exit) => Effect.flatMap(Effect.forkDaemon(Scope.close(scope, exit)), Fiber.join)
  )
