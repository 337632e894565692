/**
 * What the slowest samples of the latency scenario have in common: for
 * skiplock and Graphile Worker, alternating, one job at a time into an idle
 * queue (concurrency 5, a random gap of 1–11 ms), with the process's garbage
 * collections observed (perf_hooks). Prints p50/p95/p99, the number and total
 * time of collections during the samples, and how many of the 15 slowest
 * samples had a collection inside them. Not part of `npm run bench`.
 *
 *   npx tsx bench/probes/latencyTails.ts [--samples 1000] [--rounds 2]
 */
import { performance, PerformanceObserver } from "node:perf_hooks"
import { parseArgs } from "node:util"
import { createFreshDatabase, sleep } from "../db.js"
import { poolSizeFor } from "../scenarios/common.js"
import { quantile } from "../stats.js"
import { graphileWorker } from "../systems/graphile-worker.js"
import { skiplock } from "../systems/skiplock.js"

const { values } = parseArgs({ options: { samples: { type: "string" }, rounds: { type: "string" } } })
const samples = Number(values.samples ?? 1000)
const rounds = Number(values.rounds ?? 2)
const serverUrl = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres"
const WARMUP = 10
const WORST = 15

const collections: Array<{ readonly start: number; readonly duration: number }> = []
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) collections.push({ start: entry.startTime, duration: entry.duration })
}).observe({ entryTypes: ["gc"] })

console.log(`| round | system | p50 ms | p95 ms | p99 ms | collections | collection time ms | slowest ${WORST} with a collection inside |`)
console.log("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for (let round = 1; round <= rounds; round++) {
  for (const system of [skiplock, graphileWorker]) {
    const db = await createFreshDatabase(serverUrl, `probe_tails_${system.id}`)
    try {
      await system.install(db.url)
      const instance = await system.open(db.url, { poolSize: poolSizeFor(5) })
      try {
        const waiting = new Map<number, (at: number) => void>()
        await instance.startWorkers({ concurrency: 5, onJob: (payload) => waiting.get(payload.i)?.(performance.now()) })
        await sleep(500)
        const measured: Array<{ readonly t0: number; readonly ms: number }> = []
        let from = 0
        for (let k = 0; k < WARMUP + samples; k++) {
          await sleep(1 + Math.random() * 10)
          const started = new Promise<number>((resolve) => waiting.set(k, resolve))
          if (k === WARMUP) from = performance.now()
          const t0 = performance.now()
          await instance.enqueueOne({ i: k })
          const at = await started
          waiting.delete(k)
          if (k >= WARMUP) measured.push({ t0, ms: at - t0 })
        }
        await instance.stopWorkers()
        const during = collections.filter((c) => c.start >= from)
        const slowest = [...measured].sort((a, b) => b.ms - a.ms).slice(0, WORST)
        const hit = slowest.filter((s) => during.some((c) => c.start <= s.t0 + s.ms && c.start + c.duration >= s.t0)).length
        const ms = measured.map((s) => s.ms)
        console.log(
          `| ${round} | ${system.id} | ${quantile(ms, 0.5).toFixed(2)} | ${quantile(ms, 0.95).toFixed(2)} | ${quantile(ms, 0.99).toFixed(2)}` +
            ` | ${during.length} | ${during.reduce((sum, c) => sum + c.duration, 0).toFixed(1)} | ${hit} |`
        )
      } finally {
        await instance.close()
      }
    } finally {
      await db.drop()
    }
  }
}
process.exit(0)
