/**
 * What the latency scenario allocates per job, for skiplock and Graphile
 * Worker: one job at a time into an idle queue (concurrency 5, a random gap of
 * 1–11 ms), with V8's sampling heap profiler on (a sample every 512 bytes) in
 * two passes per system: every allocation (also those collected since), and
 * only those that outlived a young-generation collection (promoted, or still
 * alive at the end after two minor collections). Prints KB per job, in all and
 * by package. The more a job allocates, the more often the young generation
 * is collected (a pause of a few milliseconds each on this machine, which is
 * what the slowest samples of the latency scenario have in common:
 * latencyTails.ts). Not part of `npm run bench`.
 *
 *   node --expose-gc --import tsx bench/probes/allocations.ts [--samples 1000]
 */
import { Session } from "node:inspector/promises"
import { parseArgs } from "node:util"
import { createFreshDatabase, sleep } from "../db.js"
import { poolSizeFor } from "../scenarios/common.js"
import { graphileWorker } from "../systems/graphile-worker.js"
import { skiplock } from "../systems/skiplock.js"
import type { SystemAdapter } from "../systems/types.js"
import { type ProfileNode, sampleAllocations } from "./heapSampling.js"

const { values } = parseArgs({ options: { samples: { type: "string" } } })
const samples = Number(values.samples ?? 1000)
const serverUrl = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres"
const gc = (globalThis as { gc?: (options: { type: "minor" | "major" }) => void }).gc
if (gc === undefined) throw new Error("run with node --expose-gc (see the header)")

/** A frame's package: the node_modules package, the repository folder, or a Node built-in. */
const packageOf = (url: string) => {
  const inModules = url.lastIndexOf("node_modules/")
  if (inModules >= 0) {
    const parts = url.slice(inModules + "node_modules/".length).split("/")
    return parts[0]!.startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0]!
  }
  if (url.startsWith("node:")) return "node"
  if (url === "") return "(V8 built-ins)"
  const inRepository = url.match(/\/(src|bench)\//)
  return inRepository ? `skiplock ${inRepository[1]}/` : url
}

const byPackage = (head: ProfileNode) => {
  const sizes = new Map<string, number>()
  const walk = (node: ProfileNode) => {
    const name = packageOf(node.callFrame.url)
    sizes.set(name, (sizes.get(name) ?? 0) + node.selfSize)
    for (const child of node.children) walk(child)
  }
  walk(head)
  return sizes
}

const measure = async (system: SystemAdapter, keepCollectedByMinorGC: boolean) => {
  const db = await createFreshDatabase(serverUrl, `probe_allocations_${system.id}`)
  try {
    await system.install(db.url)
    const instance = await system.open(db.url, { poolSize: poolSizeFor(5) })
    try {
      const waiting = new Map<number, () => void>()
      await instance.startWorkers({ concurrency: 5, onJob: (payload) => waiting.get(payload.i)?.() })
      await sleep(500)
      let k = 0
      const run = async (n: number) => {
        for (let i = 0; i < n; i++, k++) {
          await sleep(1 + Math.random() * 10)
          const started = new Promise<void>((resolve) => waiting.set(k, resolve))
          await instance.enqueueOne({ i: k })
          await started
          waiting.delete(k)
        }
      }
      await run(50) // warm-up
      const session = new Session()
      session.connect()
      const head = await sampleAllocations(session, { intervalBytes: 512, keepCollectedByMinorGC }, () => run(samples), () => {
        // What the last young generation holds has not had its chance to die yet.
        if (!keepCollectedByMinorGC) for (let i = 0; i < 2; i++) gc({ type: "minor" })
      })
      session.disconnect()
      await instance.stopWorkers()
      return byPackage(head)
    } finally {
      await instance.close()
    }
  } finally {
    await db.drop()
  }
}

const kb = (bytes: number) => (bytes / samples / 1024).toFixed(1)
console.log("| system | KB allocated a job | KB outliving a minor GC a job | largest shares (KB a job, all allocations) |")
console.log("| --- | ---: | ---: | --- |")
for (const system of [skiplock, graphileWorker]) {
  const all = await measure(system, true)
  const kept = await measure(system, false)
  const total = (sizes: Map<string, number>) => [...sizes.values()].reduce((a, b) => a + b, 0)
  const largest = [...all].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([name, size]) => `${name} ${kb(size)}`).join(", ")
  console.log(`| ${system.id} | ${kb(total(all))} | ${kb(total(kept))} | ${largest} |`)
}
process.exit(0)
