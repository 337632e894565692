/**
 * Where the worker's Node main thread spends a drain: the drain scenario
 * (20,000 queued jobs, concurrency 5) for skiplock (or `--prefetch`, or
 * `--tuned`: 100 jobs a claim and 100 claimed ahead) under
 * V8's CPU profiler (a sample every 100 µs), each sample given to the nearest
 * frame on its stack that belongs to a known owner: skiplock's own modules,
 * the `pg` client (protocol and row parsing), @effect/sql, the harness;
 * samples of the garbage collector and of socket writes (the `writev`
 * syscall, which on loopback TCP also delivers the bytes to the server) are
 * counted apart, and what runs in Effect's fiber runtime with no owner on its
 * stack (continuations resumed from callbacks) is "Effect runtime". Prints µs
 * of main-thread time per job by owner. The profiler itself slows the drain;
 * compare shares, not the rate. Not part of `npm run bench`.
 *
 *   npx tsx bench/probes/drainProfile.ts [--jobs 20000] [--prefetch | --tuned]
 */
import { Session } from "node:inspector/promises"
import { parseArgs } from "node:util"
import { statementCount } from "../instrument.js"
import { drain } from "../scenarios/common.js"
import { skiplock, skiplockPrefetch, skiplockTuned } from "../systems/skiplock.js"
import { withQueuedJobs } from "./queuedDrain.js"

const { values } = parseArgs({ options: { jobs: { type: "string" }, prefetch: { type: "boolean" }, tuned: { type: "boolean" } } })
const jobs = Number(values.jobs ?? 20_000)
const system = values.tuned === true ? skiplockTuned : values.prefetch === true ? skiplockPrefetch : skiplock
const serverUrl = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres"

interface ProfileNode {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string }
  readonly children?: ReadonlyArray<number>
}
interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const OWNERS: ReadonlyArray<readonly [string, RegExp]> = [
  ["skiplock src/internal/executeJob.ts", /\/src\/internal\/executeJob\./],
  ["skiplock src/Worker.ts", /\/src\/Worker\./],
  ["skiplock src/internal/JobStore.ts", /\/src\/internal\/JobStore\./],
  ["skiplock src/ (other)", /\/src\//],
  ["bench harness (the no-op handler, the drain's bookkeeping)", /\/bench\//],
  ["pg client (protocol, row parsing)", /node_modules\/(pg|pg-protocol|pg-types|postgres-[a-z]+)\//],
  ["@effect/sql, @effect/sql-pg", /node_modules\/@effect\/sql/]
]
const SPECIAL = new Map([
  ["(garbage collector)", "garbage collector"],
  ["(program)", "V8 (program)"],
  ["writev", "socket writes (writev)"]
])

const attribute = (profile: Profile) => {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const parentOf = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id)
  const ownerOf = (leaf: ProfileNode): string => {
    const special = SPECIAL.get(leaf.callFrame.functionName)
    if (special !== undefined) return special
    for (let id: number | undefined = leaf.id; id !== undefined; id = parentOf.get(id)) {
      const owner = OWNERS.find(([, pattern]) => pattern.test(byId.get(id)!.callFrame.url))
      if (owner !== undefined) return owner[0]
    }
    return leaf.callFrame.url.includes("/node_modules/effect/") ? "Effect runtime (no owner on the stack)" : "Node internals, native (no owner)"
  }
  const micros = new Map<string, number>()
  profile.samples.forEach((sample, i) => {
    const leaf = byId.get(sample)!
    if (leaf.callFrame.functionName === "(idle)") return
    const owner = ownerOf(leaf)
    micros.set(owner, (micros.get(owner) ?? 0) + profile.timeDeltas[i]!)
  })
  return micros
}

await withQueuedJobs(serverUrl, "probe_drain_profile", system, { jobs, concurrency: 5 }, async (instance, observer) => {
  const session = new Session()
  session.connect()
  await session.post("Profiler.enable")
  await session.post("Profiler.setSamplingInterval", { interval: 100 })
  await session.post("Profiler.start")
  const result = await drain(system, instance, observer, { jobs, concurrency: 5, timeoutMs: 120_000, statementCount })
  const { profile } = (await session.post("Profiler.stop")) as unknown as { profile: Profile }
  session.disconnect()
  const micros = attribute(profile)
  const busy = [...micros.values()].reduce((a, b) => a + b, 0)
  const perJob = (us: number) => (us / result.completed).toFixed(1)
  console.log(`${system.label}: ${Math.round(result.jobsPerSec).toLocaleString("en-US")} jobs/s under the profiler; main thread busy ${perJob(busy)} µs a job`)
  console.log("| owner | µs a job | share |")
  console.log("| --- | ---: | ---: |")
  for (const [owner, us] of [...micros].sort((a, b) => b[1] - a[1])) {
    console.log(`| ${owner} | ${perJob(us)} | ${((100 * us) / busy).toFixed(0)} % |`)
  }
})
process.exit(0)
