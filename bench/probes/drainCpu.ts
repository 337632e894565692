/**
 * Where a drain's time goes, in CPU: the drain scenario (20,000 queued jobs,
 * concurrency 5) for skiplock (without and with prefetch 5) and Graphile
 * Worker, alternating, with the CPU
 * time this Node process and the PostgreSQL server spent meanwhile
 * (bench/cpu.ts; the server must run on this host). Per job, and as a share
 * of one core over the drain's wall time: when the Node share and the server
 * share add up to about one core, the two take turns (one waits while the
 * other works) and the drain rate is about 1 ÷ (Node + server CPU per job).
 *
 * With --unprepared, also skiplock without prepared statements (both variants).
 *
 *   npx tsx bench/probes/drainCpu.ts [--jobs 20000] [--concurrency 5] [--rounds 2] [--unprepared]
 */
import { parseArgs } from "node:util"
import { graphileWorker } from "../systems/graphile-worker.js"
import { skiplock, skiplockPrefetch, skiplockPrefetchUnprepared, skiplockUnprepared } from "../systems/skiplock.js"
import { drainWithCpu, localServerUrl, withQueuedJobs } from "./queuedDrain.js"

const { values } = parseArgs({ options: { jobs: { type: "string" }, concurrency: { type: "string" }, rounds: { type: "string" }, unprepared: { type: "boolean" } } })
const jobs = Number(values.jobs ?? 20_000)
const concurrency = Number(values.concurrency ?? 5)
const rounds = Number(values.rounds ?? 2)
const systems = values.unprepared === true
  ? [skiplock, skiplockUnprepared, skiplockPrefetch, skiplockPrefetchUnprepared, graphileWorker]
  : [skiplock, skiplockPrefetch, graphileWorker]
const serverUrl = localServerUrl("drainCpu")

const fmt = (n: number) => Math.round(n).toLocaleString("en-US")
console.log(`| round | system | jobs/s | Node CPU (µs/job) | server CPU (µs/job) | Node (% of a core) | server (% of a core) | together |`)
console.log(`| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |`)
for (let round = 1; round <= rounds; round++) {
  for (const system of systems) {
    await withQueuedJobs(serverUrl, "probe_drain_cpu", system, { jobs, concurrency }, async (instance, observer) => {
      const { result, nodeMicros: node, serverMicros: server } = await drainWithCpu(system, instance, observer, { jobs, concurrency })
      const wallMicros = result.elapsedMs * 1000
      const share = (micros: number) => (100 * micros) / wallMicros
      console.log(
        `| ${round} | ${system.id} | ${fmt(result.jobsPerSec)} | ${fmt(node / result.completed)} | ${fmt(server / result.completed)}` +
          ` | ${fmt(share(node))} % | ${fmt(share(server))} % | ${fmt(share(node + server))} % |`
      )
    })
  }
}
