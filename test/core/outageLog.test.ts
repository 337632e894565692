// A background task that keeps failing says so in a few lines, also when its connection flaps.
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Logger, TestClock } from "effect"
import { makeOutageLog } from "../../src/internal/outageLog.js"

const capturingLogs = () => {
  const lines: Array<string> = []
  const logger = Logger.make(({ logLevel, message }) => {
    lines.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
  })
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}

const refused = new Error("connection refused")

describe("outage log", () => {
  it.effect("an outage: a warning on the first failure and every 10th, one line when the task works again", () => {
    const { lines, layer } = capturingLogs()
    return Effect.gen(function* () {
      const log = makeOutageLog("heartbeat")
      yield* log.succeeded
      for (let i = 0; i < 25; i++) {
        yield* log.failed(refused)
        yield* TestClock.adjust("1 second")
      }
      yield* log.succeeded
      yield* log.succeeded
      expect(lines).toEqual([
        "WARN heartbeat failed: connection refused",
        "WARN heartbeat still failing (10 failures since 1970-01-01T00:00:00.000Z): connection refused",
        "WARN heartbeat still failing (20 failures since 1970-01-01T00:00:00.000Z): connection refused",
        "INFO heartbeat works again after 25 failure(s)"
      ])
    }).pipe(Effect.provide(layer))
  })

  it.effect("a task run once a minute that fails on every run is one outage, though its runs come a little more than a minute apart", () => {
    const { lines, layer } = capturingLogs()
    return Effect.gen(function* () {
      const log = makeOutageLog("pruning finished jobs", Duration.minutes(1))
      for (let i = 0; i < 4; i++) {
        yield* log.failed(refused)
        yield* TestClock.adjust("60002 millis")
      }
      yield* log.succeeded
      expect(lines).toEqual(["WARN pruning finished jobs failed: connection refused", "INFO pruning finished jobs works again after 4 failure(s)"])
    }).pipe(Effect.provide(layer))
  })

  it.effect("a connection that is dropped again and again is one outage, not a warning per drop", () => {
    const { lines, layer } = capturingLogs()
    return Effect.gen(function* () {
      const log = makeOutageLog("claiming jobs")
      for (let flap = 0; flap < 12; flap++) {
        yield* log.failed(refused)
        yield* TestClock.adjust("100 millis")
        yield* log.succeeded
        yield* TestClock.adjust("5 seconds")
      }
      expect(lines).toEqual([
        "WARN claiming jobs failed: connection refused",
        "INFO claiming jobs works again after 1 failure(s)",
        "WARN claiming jobs still failing (10 failures since 1970-01-01T00:00:00.000Z): connection refused",
        "INFO claiming jobs works again after 10 failure(s)"
      ])
    }).pipe(Effect.provide(layer))
  })

  it.effect("a failure long after the last one is a new outage, said again", () => {
    const { lines, layer } = capturingLogs()
    return Effect.gen(function* () {
      const log = makeOutageLog("rescuing expired jobs")
      yield* log.failed(refused)
      yield* log.succeeded
      yield* TestClock.adjust("61 seconds")
      yield* log.failed(new Error("too many clients"))
      yield* log.succeeded
      expect(lines).toEqual([
        "WARN rescuing expired jobs failed: connection refused",
        "INFO rescuing expired jobs works again after 1 failure(s)",
        "WARN rescuing expired jobs failed: too many clients",
        "INFO rescuing expired jobs works again after 1 failure(s)"
      ])
    }).pipe(Effect.provide(layer))
  })
})
