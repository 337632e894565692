/**
 * Latency: one job at a time into an idle queue; the time from just before
 * the enqueue call to the handler starting. Samples are spaced by a random
 * gap so that enqueues land at random points of a polling system's cycle.
 */
import { performance } from "node:perf_hooks"
import { sleep } from "../db.js"
import { percentiles } from "../stats.js"
import { metric, poolSizeFor, record, roundOrder, withFreshDatabase, withInstance, type Context } from "./common.js"

export const runLatency = async (ctx: Context): Promise<void> => {
  const { rounds, latencySamples, latencyConcurrency, latencyBudgetMs, latencyGapMs } = ctx.config
  const label = (p: string) => `Enqueue-to-start latency ${p} (idle queue, concurrency ${latencyConcurrency})`
  const p50 = metric(ctx, "latency", "latency.p50", label("p50"), "ms", "lower")
  const p95 = metric(ctx, "latency", "latency.p95", label("p95"), "ms", "lower")
  const p99 = metric(ctx, "latency", "latency.p99", label("p99"), "ms", "lower")
  for (let round = 0; round < rounds; round++) {
    for (const system of roundOrder(ctx.systems, round)) {
      const samples = await withFreshDatabase(ctx, system, "latency", (db) =>
        withInstance(ctx, system, db, poolSizeFor(latencyConcurrency), async (instance) => {
          const waiting = new Map<number, (at: number) => void>()
          await instance.startWorkers({
            concurrency: latencyConcurrency,
            onJob: (payload) => {
              const at = performance.now()
              waiting.get(payload.i)?.(at)
              waiting.delete(payload.i)
            }
          })
          await sleep(500)
          // A polling system's first samples cost a poll cycle each; only NOTIFY-driven ones get a warm-up.
          const warmup = system.idlePollMs > 0 ? 0 : Math.min(10, Math.ceil(latencySamples / 10))
          const maxGap = system.idlePollMs > 0 ? system.idlePollMs : latencyGapMs
          const sampleTimeout = Math.max(10_000, 3 * system.idlePollMs)
          const collected: Array<number> = []
          const budgetEnd = performance.now() + latencyBudgetMs
          for (let k = 0; k < warmup + latencySamples && performance.now() < budgetEnd; k++) {
            await sleep(1 + Math.random() * maxGap)
            const startedAt = new Promise<number>((resolve, reject) => {
              waiting.set(k, resolve)
              setTimeout(() => reject(new Error(`sample ${k} did not start within ${sampleTimeout} ms`)), sampleTimeout).unref()
            })
            const t0 = performance.now()
            await instance.enqueueOne({ i: k })
            const at = await startedAt
            if (k >= warmup) collected.push(at - t0)
          }
          await instance.stopWorkers()
          return collected
        })
      )
      const p = percentiles(samples)
      const note = samples.length < latencySamples ? `fewer samples than asked: the ${Math.round(latencyBudgetMs / 1000)} s budget per round ran out (see the JSON for n)` : undefined
      record(p50, system.id, round, p.p50, note)
      record(p95, system.id, round, p.p95)
      record(p99, system.id, round, p.p99)
      ctx.runs.push({ scenario: "latency", round, system: system.id, ...p })
      ctx.log(
        `latency round ${round + 1}/${rounds} ${system.id}: p50 ${p.p50.toFixed(2)} ms, p95 ${p.p95.toFixed(2)} ms, p99 ${p.p99.toFixed(2)} ms (n=${p.n})`
      )
    }
  }
}
