/**
 * The first SIGTERM or SIGINT stops the service gracefully (NodeRuntime.runMain
 * interrupts the main fiber, and the layers close in order). A second one,
 * while that shutdown runs, exits at once: jobs still running then stay
 * `processing` until their lease expires and another worker rescues them.
 */
import { Effect, Layer } from "effect"

const SIGNAL_NUMBERS = { SIGINT: 2, SIGTERM: 15 } as const

export const exitOnSecondSignal = Layer.scopedDiscard(
  Effect.acquireRelease(
    Effect.sync(() => {
      let received = 0
      const onSignal = (signal: keyof typeof SIGNAL_NUMBERS) => {
        received++
        if (received < 2) return
        process.stderr.write(`skiplock: second ${signal}: exiting at once without waiting for running jobs\n`)
        process.exit(128 + SIGNAL_NUMBERS[signal])
      }
      process.on("SIGINT", onSignal)
      process.on("SIGTERM", onSignal)
      return onSignal
    }),
    (onSignal) =>
      Effect.sync(() => {
        process.off("SIGINT", onSignal)
        process.off("SIGTERM", onSignal)
      })
  )
)
