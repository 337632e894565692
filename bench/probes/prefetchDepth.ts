/**
 * How the drain at concurrency 5 scales with how far ahead skiplock claims:
 * 20,000 queued jobs drained by skiplock with `prefetch` 0, 5, 10 and 20
 * (each claim still at most 5 jobs, so at concurrency 5 up to prefetch ÷ 5 + 1
 * statements are in flight, at least 2) and by Graphile Worker, with its defaults and with its local queue
 * (size C + 1), alternating (the order reversed every other round), with the
 * CPU time this Node process and the PostgreSQL server spent per job
 * (bench/cpu.ts; the server must run on this host). Prints each drain and
 * each skiplock variant's ratio to both Graphile Worker variants of the same
 * round. Not part of `npm run bench`.
 *
 * With --batch-sizes, the skiplock variants claim at most 5, 3, 2, 1 … jobs a statement
 * (`batchSize`, no prefetch) instead: smaller claims start some jobs while others are
 * still being completed and claimed, at more statements per job.
 *
 *   npx tsx bench/probes/prefetchDepth.ts [--depths 0,5,10,20 | --batch-sizes 5,3,2,1] [--rounds 3] [--jobs 20000] [--concurrency 5]
 */
import { parseArgs } from "node:util"
import { graphileWorker, graphileWorkerLocalQueue } from "../systems/graphile-worker.js"
import { skiplockWithBatchSize, skiplockWithPrefetch } from "../systems/skiplock.js"
import { drainWithCpu, localServerUrl, withQueuedJobs } from "./queuedDrain.js"

const { values } = parseArgs({
  options: { depths: { type: "string" }, "batch-sizes": { type: "string" }, rounds: { type: "string" }, jobs: { type: "string" }, concurrency: { type: "string" } }
})
const depths = (values.depths ?? "0,5,10,20").split(",").map(Number)
const rounds = Number(values.rounds ?? 3)
const jobs = Number(values.jobs ?? 20_000)
const concurrency = Number(values.concurrency ?? 5)
const serverUrl = localServerUrl("prefetchDepth")

const peers = [graphileWorker, graphileWorkerLocalQueue]
const batchSizes = values["batch-sizes"]?.split(",").map(Number)
const systems = [...(batchSizes === undefined ? depths.map(skiplockWithPrefetch) : batchSizes.map(skiplockWithBatchSize)), ...peers]
const fmt = (n: number) => Math.round(n).toLocaleString("en-US")
console.log(`| round | system | jobs/s | ÷ ${peers.map((p) => p.label).join(" | ÷ ")} | Node CPU (µs/job) | server CPU (µs/job) |`)
console.log(`| ---: | --- | ---: | ${peers.map(() => "---:").join(" | ")} | ---: | ---: |`)
for (let round = 1; round <= rounds; round++) {
  const rates = new Map<string, number>()
  const lines: Array<[string, string]> = []
  for (const system of round % 2 === 1 ? systems : [...systems].reverse()) {
    await withQueuedJobs(serverUrl, "probe_prefetch_depth", system, { jobs, concurrency }, async (instance, observer) => {
      const { result, nodeMicros, serverMicros } = await drainWithCpu(system, instance, observer, { jobs, concurrency })
      rates.set(system.id, result.jobsPerSec)
      lines.push([system.id, `${fmt(nodeMicros / result.completed)} | ${fmt(serverMicros / result.completed)}`])
    })
  }
  // Printed in one order every round, with the ratios once the round's peers have run.
  for (const system of systems) {
    const rate = rates.get(system.id)!
    const ratios = peers.map((peer) => (peers.includes(system) ? "" : `${(rate / rates.get(peer.id)!).toFixed(2)}×`))
    console.log(`| ${round} | ${system.label} | ${fmt(rate)} | ${ratios.join(" | ")} | ${lines.find(([id]) => id === system.id)![1]} |`)
  }
}
process.exit(0)
