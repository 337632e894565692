/**
 * Tuned against tuned: the drain scenario (20,000 queued jobs, concurrency 5)
 * for skiplock with claims of 100 jobs and 100 claimed ahead (what the runbook's
 * 5 a claim rules out for the service) beside pg-boss tuned for throughput
 * (100 jobs a fetch) and skiplock's defaults, alternating, with the CPU time of
 * this Node process and of the PostgreSQL server meanwhile (bench/cpu.ts; the
 * server must run on this host).
 *
 *   npx tsx bench/probes/tunedDrain.ts [--jobs 20000] [--concurrency 5] [--rounds 3]
 */
import { parseArgs } from "node:util"
import { installInstrumentation } from "../instrument.js"
import { makePgBoss } from "../systems/pg-boss.js"
import { skiplock, skiplockTuned } from "../systems/skiplock.js"
import { drainWithCpu, localServerUrl, withQueuedJobs } from "./queuedDrain.js"

const { values } = parseArgs({ options: { jobs: { type: "string" }, concurrency: { type: "string" }, rounds: { type: "string" } } })
const jobs = Number(values.jobs ?? 20_000)
const concurrency = Number(values.concurrency ?? 5)
const rounds = Number(values.rounds ?? 3)
const serverUrl = localServerUrl("tunedDrain")

installInstrumentation()
const fmt = (n: number) => Math.round(n).toLocaleString("en-US")
console.log(`| round | system | jobs/s | statements/job | Node CPU (µs/job) | server CPU (µs/job) |`)
console.log(`| ---: | --- | ---: | ---: | ---: | ---: |`)
for (let round = 1; round <= rounds; round++) {
  for (const system of [skiplock, skiplockTuned, makePgBoss(true)]) {
    await withQueuedJobs(serverUrl, "probe_tuned_drain", system, { jobs, concurrency }, async (instance, observer) => {
      const { result, nodeMicros: node, serverMicros: server } = await drainWithCpu(system, instance, observer, { jobs, concurrency })
      console.log(
        `| ${round} | ${system.id} | ${fmt(result.jobsPerSec)} | ${(result.statements / result.completed).toFixed(3)} | ${fmt(node / result.completed)} | ${fmt(server / result.completed)} |`
      )
    })
  }
}
