/**
 * Where enqueue-to-start latency goes, skiplock next to Graphile Worker (the
 * latency scenario's setting: idle queue, concurrency 5, one job at a time).
 * For each sample it traces the two statements on the path, as `pg` sees them:
 *
 *   enqueue call ─► enqueue statement sent ─► answered ─► claim statement sent ─► answered ─► handler starts
 *
 * and reports the median and p95 of each step. The claim may leave before the
 * enqueue's answer is read (the notification came first): that step is then
 * negative. skiplock's hand-off claims in the enqueue statement itself
 * (enqueue_and_claim): its two claim steps are then 0, and `skiplock (no
 * hand-off)` shows the path through NOTIFY. Not part of `npm run bench`; a
 * tool for finding where time goes.
 *
 *   npx tsx bench/probes/latencyBreakdown.ts [--samples 500] [--rounds 2]
 */
import { performance } from "node:perf_hooks"
import { parseArgs } from "node:util"
import { createFreshDatabase, sleep } from "../db.js"
import { installInstrumentation, traceStatements, type TracedStatement } from "../instrument.js"
import { poolSizeFor } from "../scenarios/common.js"
import { quantile } from "../stats.js"
import { graphileWorker } from "../systems/graphile-worker.js"
import { skiplock, skiplockNoHandOff } from "../systems/skiplock.js"
import type { SystemAdapter } from "../systems/types.js"

const { values } = parseArgs({ options: { samples: { type: "string" }, rounds: { type: "string" } } })
const samples = Number(values.samples ?? 500)
const rounds = Number(values.rounds ?? 2)
const serverUrl = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres"
const WARMUP = 20

// The statement that inserts a job, per system (the claim statement comes from the adapter).
const probes: ReadonlyArray<{ readonly system: SystemAdapter; readonly isEnqueue: (text: string) => boolean }> = [
  { system: skiplock, isEnqueue: (text) => /INSERT INTO job_queue/i.test(text) },
  { system: skiplockNoHandOff, isEnqueue: (text) => /INSERT INTO job_queue/i.test(text) },
  { system: graphileWorker, isEnqueue: (text) => /\badd_job\s*\(/i.test(text) }
]

const STEPS = ["enqueue statement sent", "enqueue round trip", "claim sent after enqueue answered", "claim round trip", "handler start after claim answered", "total"] as const
type Sample = Record<(typeof STEPS)[number], number>

const measure = async (probe: (typeof probes)[number]): Promise<Array<Sample>> => {
  const { system } = probe
  const db = await createFreshDatabase(serverUrl, `probe_${system.id}`)
  try {
    await system.install(db.url)
    const instance = await system.open(db.url, { poolSize: poolSizeFor(5) })
    try {
      let onStart: ((at: number) => void) | undefined
      await instance.startWorkers({ concurrency: 5, onJob: () => onStart?.(performance.now()) })
      await sleep(500)
      const collected: Array<Sample> = []
      for (let k = 0; k < WARMUP + samples; k++) {
        await sleep(1 + Math.random() * 10)
        const started = new Promise<number>((resolve) => (onStart = resolve))
        const stop = traceStatements((text) =>
          /enqueue_and_claim\s*\(/i.test(text) ? "hand-off" : probe.isEnqueue(text) ? "enqueue" : system.isClaimQuery(text) ? "claim" : undefined
        )
        const t0 = performance.now()
        await instance.enqueueOne({ i: k })
        const startAt = await started
        const traced = stop()
        if (k < WARMUP) continue
        const enqueue = traced.find((s) => s.label === "enqueue" || s.label === "hand-off")
        // The claim that found the job: the enqueue's own (a hand-off), or the last one answered before the handler started.
        const claim = enqueue?.label === "hand-off"
          ? enqueue
          : traced.filter((s) => s.label === "claim" && s.doneAt <= startAt).at(-1)
        if (enqueue === undefined) throw new Error(`${system.id}: sample ${k} has no enqueue statement`)
        // Rarely no claim is traced before the handler starts: the claim that found the job was sent
        // before tracing began (probably a poll the server ran only after the enqueue committed), so
        // the sample cannot be split into steps.
        if (claim === undefined) {
          untraced.set(system.id, (untraced.get(system.id) ?? 0) + 1)
          continue
        }
        collected.push(steps(t0, enqueue, claim, startAt))
      }
      await instance.stopWorkers()
      return collected
    } finally {
      await instance.close()
    }
  } finally {
    await db.drop()
  }
}

// A hand-off's claim is its enqueue statement: no steps of its own.
const steps = (t0: number, enqueue: TracedStatement, claim: TracedStatement, startAt: number): Sample => ({
  "enqueue statement sent": enqueue.sentAt - t0,
  "enqueue round trip": enqueue.doneAt - enqueue.sentAt,
  "claim sent after enqueue answered": claim === enqueue ? 0 : claim.sentAt - enqueue.doneAt,
  "claim round trip": claim === enqueue ? 0 : claim.doneAt - claim.sentAt,
  "handler start after claim answered": startAt - claim.doneAt,
  total: startAt - t0
})

installInstrumentation()
const results = new Map<string, Array<Sample>>()
// Samples left out per system because no claim statement was traced for them.
const untraced = new Map<string, number>()
for (let round = 0; round < rounds; round++) {
  for (const probe of probes) {
    const collected = await measure(probe)
    results.set(probe.system.id, [...(results.get(probe.system.id) ?? []), ...collected])
    console.error(`round ${round + 1}/${rounds} ${probe.system.id}: total p50 ${quantile(collected.map((s) => s.total), 0.5).toFixed(2)} ms`)
  }
}
console.log(`| step (ms, p50 / p95) | ${probes.map((p) => p.system.label).join(" | ")} |`)
console.log(`| --- | ${probes.map(() => "---:").join(" | ")} |`)
for (const step of STEPS) {
  const cells = probes.map((p) => {
    const values = results.get(p.system.id)!.map((s) => s[step])
    return `${quantile(values, 0.5).toFixed(2)} / ${quantile(values, 0.95).toFixed(2)}`
  })
  console.log(`| ${step} | ${cells.join(" | ")} |`)
}
for (const [id, n] of untraced) console.log(`\n${id}: ${n} sample(s) left out: no claim statement was traced between the enqueue call and the handler's start`)
