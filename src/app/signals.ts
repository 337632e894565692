/**
 * The first SIGTERM or SIGINT stops the service gracefully (NodeRuntime.runMain
 * interrupts the main fiber, and the layers close in order). A second one,
 * while that shutdown runs, exits at once: jobs still running then stay
 * `processing` until their lease expires and another worker rescues them.
 *
 * A repeat within DUPLICATE_WINDOW_MS of the first is the same stop delivered
 * twice (`npm start` forwards the signal its process group also got, as under
 * systemd or `timeout`), not a person asking again: it is ignored.
 */
import { Effect, Layer } from "effect"

const SIGNAL_NUMBERS = { SIGINT: 2, SIGTERM: 15 } as const
const DUPLICATE_WINDOW_MS = 250

export const exitOnSecondSignal = Layer.scopedDiscard(
  Effect.acquireRelease(
    Effect.sync(() => {
      let first: number | undefined
      const onSignal = (signal: keyof typeof SIGNAL_NUMBERS) => {
        const now = Date.now()
        if (first === undefined) {
          first = now
          return
        }
        if (now - first < DUPLICATE_WINDOW_MS) return
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
