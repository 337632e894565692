/**
 * How many steps of Effect's fiber runtime skiplock's worker takes per job:
 * the drain scenario (20,000 queued jobs, concurrency 5) with every
 * instruction the runtime evaluates counted, by kind, over the drain. Unlike
 * CPU time on this shared machine, the count hardly moves between runs, so it
 * shows what a change to the hot path saves even when a drain's rate cannot.
 * `--detail` also lists the most frequent steps by the function they run (the
 * first characters of its source), which says where they come from.
 *
 * Counting wraps the runtime's per-instruction methods (an internal module of
 * `effect`, imported by path), so the counted drain itself runs slower.
 *
 *   npx tsx bench/probes/effectSteps.ts [--jobs 20000] [--concurrency 5] [--prefetch] [--detail]
 */
import { parseArgs } from "node:util"
import { installInstrumentation, statementCount } from "../instrument.js"
import { drain } from "../scenarios/common.js"
import { skiplock, skiplockPrefetch } from "../systems/skiplock.js"
import { withQueuedJobs } from "./queuedDrain.js"

const { values } = parseArgs({
  options: { jobs: { type: "string" }, concurrency: { type: "string" }, prefetch: { type: "boolean" }, detail: { type: "boolean" } }
})
const jobs = Number(values.jobs ?? 20_000)
const concurrency = Number(values.concurrency ?? 5)
const system = values.prefetch === true ? skiplockPrefetch : skiplock
const serverUrl = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres"

// The instruction kinds FiberRuntime evaluates, each a method named by its op code.
const KINDS = [
  "Tag", "Left", "None", "Right", "Some", "Micro", "Sync", "Success", "Failure", "WithRuntime",
  "UpdateRuntimeFlags", "OnSuccess", "OnStep", "OnFailure", "OnSuccessAndFailure", "Async", "Yield", "While", "Iterator", "Commit"
] as const
let counting = false
const byKind = new Map<string, number>()
const bySource = new Map<string, number>()
const source = (kind: string, op: { effect_instruction_i0?: unknown; commit?: unknown }) => {
  const fn = kind === "Commit" ? op.commit : op.effect_instruction_i0
  return typeof fn === "function" ? `${kind} ${String(fn).replace(/\s+/g, " ").slice(0, 100)}` : kind
}
// The same module instance the `effect` package uses (its ESM build); internal, so untyped.
const runtimeModule: string = "../../node_modules/effect/dist/esm/internal/fiberRuntime.js"
const { FiberRuntime } = (await import(runtimeModule)) as { FiberRuntime: { prototype: Record<string, (this: unknown, op: never) => unknown> } }
const prototype = FiberRuntime.prototype
for (const kind of KINDS) {
  const evaluate = prototype[kind]
  if (evaluate === undefined) throw new Error(`effectSteps: this version of effect has no "${kind}" instruction; update KINDS`)
  prototype[kind] = function (this: unknown, op: never) {
    if (counting) {
      byKind.set(kind, (byKind.get(kind) ?? 0) + 1)
      if (values.detail === true) {
        const key = source(kind, op)
        bySource.set(key, (bySource.get(key) ?? 0) + 1)
      }
    }
    return evaluate.call(this, op)
  }
}

installInstrumentation()
await withQueuedJobs(serverUrl, "probe_effect_steps", system, { jobs, concurrency }, async (instance, observer) => {
  counting = true
  const result = await drain(system, instance, observer, { jobs, concurrency, timeoutMs: 120_000, statementCount })
  counting = false
  const perJob = (n: number) => (n / result.completed).toFixed(1)
  const total = [...byKind.values()].reduce((a, b) => a + b, 0)
  console.log(`${system.id}: ${result.completed.toLocaleString("en-US")} jobs at concurrency ${concurrency}, ${perJob(total)} Effect steps a job` +
    ` (${(result.statements / result.completed).toFixed(2)} statements a job; the worker's start included, its stop not)`)
  console.log("| step | per job |")
  console.log("| --- | ---: |")
  for (const [kind, n] of [...byKind].sort((a, b) => b[1] - a[1])) console.log(`| ${kind} | ${perJob(n)} |`)
  if (values.detail === true) {
    console.log("\n| step and the function it runs | per job |")
    console.log("| --- | ---: |")
    for (const [key, n] of [...bySource].sort((a, b) => b[1] - a[1]).slice(0, 40)) {
      console.log(`| \`${key.replace(/\|/g, "\\|").replace(/`/g, "'")}\` | ${perJob(n)} |`)
    }
  }
})
