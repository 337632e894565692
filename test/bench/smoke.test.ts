// The benchmark harness, end to end, in its smoke mode: every system is set
// up in its own fresh database, runs every scenario on a few hundred jobs, and
// the results land in JSON and markdown. Proves the harness works; the numbers
// of a smoke run mean nothing. The full benchmark is `npm run bench`, never
// part of `npm test`.
//
// The server comes from DATABASE_URL (an admin URL such as
// postgres://postgres@127.0.0.1:5432/postgres), else from the server the test
// run's globalSetup found; the harness creates and drops its own databases.
import { spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { serverCpuMicros, serverIsLocal } from "../../bench/cpu.js"
import { SERVER_BUSY_ELSEWHERE } from "../../bench/scenarios/cost.js"

// globalSetup always finds or starts a server (or fails the run), so one of the two is set.
const serverUrl = process.env.DATABASE_URL || process.env.SKIPLOCK_TEST_ADMIN_URL || ""
const root = resolve(import.meta.dirname, "..", "..")
const SYSTEMS = ["skiplock", "graphile-worker", "pg-boss", "pg-boss-tuned"]

interface Result {
  readonly smoke: boolean
  readonly systems: ReadonlyArray<{ id: string; version: string }>
  readonly skipped: ReadonlyArray<{ id: string; reason: string }>
  readonly metrics: ReadonlyArray<{
    key: string
    scenario: string
    values: Record<string, ReadonlyArray<number | null>>
    notes: Record<string, Record<string, ReadonlyArray<number>>>
  }>
}

const runHarness = (outDir: string) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolvePromise, reject) => {
    const child = spawn(join(root, "node_modules", ".bin", "tsx"), ["bench/run.ts", "--smoke", "--quiet", "--out", outDir], {
      cwd: root,
      env: { ...process.env, DATABASE_URL: serverUrl },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("error", reject)
    child.on("close", (code) => resolvePromise({ code, stdout, stderr }))
  })

describe("bench harness (smoke mode)", () => {
  const outDir = mkdtempSync(join(tmpdir(), "skiplock-bench-smoke-"))
  afterAll(() => rmSync(outDir, { recursive: true, force: true }))

  it("runs every scenario for skiplock, Graphile Worker and pg-boss and writes JSON and markdown", async () => {
    expect(serverUrl, "no PostgreSQL server: set DATABASE_URL or run through vitest's globalSetup").not.toBe("")
    const readme = () => readFileSync(join(root, "README.md"), "utf8")
    const readmeBefore = readme()
    const { code, stdout, stderr } = await runHarness(outDir)
    expect(code, `harness failed:\n${stderr}`).toBe(0)
    // Only a full run goes into the README (its Latest run section).
    expect(readme() === readmeBefore, "a smoke run changed README.md").toBe(true)

    expect(existsSync(join(outDir, "smoke-latest.json"))).toBe(true)
    const result = JSON.parse(readFileSync(join(outDir, "smoke-latest.json"), "utf8")) as Result
    expect(result.smoke).toBe(true)
    expect(result.skipped).toEqual([])
    expect(result.systems.map((s) => s.id)).toEqual([
      "skiplock",
      "skiplock-no-handoff",
      "skiplock-prefetch",
      "skiplock-prefetch-20",
      "graphile-worker",
      "graphile-worker-local-queue",
      ...SYSTEMS.slice(2)
    ])

    const recorded = (key: string, system: string) => result.metrics.find((m) => m.key === key)?.values[system] ?? []
    const values = (key: string, system: string) => recorded(key, system).filter((v): v is number => v !== null)
    const notes = (key: string, system: string) => Object.keys(result.metrics.find((m) => m.key === key)?.notes[system] ?? {})
    for (const system of SYSTEMS) {
      for (const key of ["drain.c5", "drain.c50", "latency.p50", "latency.p99", "enqueue.single", "enqueue.batch", "cost.single.xacts", "cost.batch.stmts"]) {
        expect(values(key, system), `${key} for ${system}`).toHaveLength(1)
        expect(Number.isFinite(values(key, system)[0]), `${key} for ${system}`).toBe(true)
      }
      if (system !== "pg-boss") {
        for (const key of ["history.empty.rate", "history.full.rate", "history.full.claim", "memory.held", "memory.growth"]) {
          expect(values(key, system), `${key} for ${system}`).toHaveLength(1)
        }
      }
    }
    // The variant without hand-off runs in the latency scenario only.
    expect(values("latency.p50", "skiplock-no-handoff")).toHaveLength(1)
    expect(values("drain.c5", "skiplock-no-handoff")).toHaveLength(0)
    // The variants with prefetch run in the drain scenario only, and are compared with each peer there.
    for (const variant of ["skiplock-prefetch", "skiplock-prefetch-20"]) {
      expect(values("drain.c5", variant)[0], variant).toBeGreaterThan(0)
      expect(values("latency.p50", variant), variant).toHaveLength(0)
    }
    // So does Graphile Worker with its local queue, its counterpart.
    expect(values("drain.c5", "graphile-worker-local-queue")[0]).toBeGreaterThan(0)
    expect(values("latency.p50", "graphile-worker-local-queue")).toHaveLength(0)
    // Throughput is positive for everyone, even when a drain is cut off.
    for (const system of SYSTEMS) expect(values("drain.c50", system)[0]).toBeGreaterThan(0)
    // A cut-off drain still gives a rate, so that alone would hide a system whose end the harness cannot
    // see (its count of unfinished jobs never reaching 0): every drain but pg-boss's poll-bound defaults empties its queue.
    for (const system of ["skiplock", "skiplock-prefetch", "skiplock-prefetch-20", "graphile-worker", "graphile-worker-local-queue", "pg-boss-tuned"]) {
      for (const key of ["drain.c5", "drain.c50", "history.empty.rate", "history.full.rate"]) {
        expect(notes(key, system), `${key} for ${system}`).toEqual([])
      }
    }
    // What a processed job costs: CPU on both sides and WAL flushes (the two that always finish their jobs).
    // The server's CPU is only readable when it runs on this host.
    const serverReadable = serverIsLocal(serverUrl) && serverCpuMicros() !== undefined
    for (const system of ["skiplock", "graphile-worker"]) {
      expect(values("cost.work.cpu.node", system)[0], `Node CPU per job for ${system}`).toBeGreaterThan(0)
      expect(values("cost.work.walflushes", system), `WAL flushes per job for ${system}`).toHaveLength(1)
      if (!serverReadable) continue
      // Other test files share the server and its CPU reading: a reading they outweighed is left out, with a note saying so.
      const serverCpu = recorded("cost.work.cpu.server", system)[0]
      if (serverCpu === null) expect(notes("cost.work.cpu.server", system), `server CPU per job for ${system}`).toEqual([SERVER_BUSY_ELSEWHERE])
      else expect(serverCpu, `server CPU per job for ${system}`).toBeGreaterThan(0)
    }

    const markdown = readFileSync(join(outDir, "smoke-latest.md"), "utf8")
    expect(markdown).toContain("| Metric | Unit | skiplock | Graphile Worker | pg-boss (default) | pg-boss (tuned) |")
    expect(markdown).toContain(
      "| Metric | Unit | skiplock | skiplock (no hand-off) | Graphile Worker | pg-boss (default) | pg-boss (tuned) | " +
        "skiplock ÷ skiplock (no hand-off) | skiplock ÷ Graphile Worker | skiplock ÷ pg-boss (default) | skiplock ÷ pg-boss (tuned) | " +
        "skiplock (no hand-off) ÷ Graphile Worker | skiplock (no hand-off) ÷ pg-boss (default) | skiplock (no hand-off) ÷ pg-boss (tuned) |"
    )
    expect(markdown).toContain(
      "| Metric | Unit | skiplock | skiplock (prefetch 5) | skiplock (prefetch 20) | Graphile Worker | Graphile Worker (local queue) | pg-boss (default) | pg-boss (tuned) | " +
        "skiplock ÷ skiplock (prefetch 5) | skiplock ÷ skiplock (prefetch 20) | skiplock ÷ Graphile Worker | skiplock ÷ Graphile Worker (local queue) | " +
        "skiplock ÷ pg-boss (default) | skiplock ÷ pg-boss (tuned) | skiplock (prefetch 5) ÷ Graphile Worker | skiplock (prefetch 5) ÷ Graphile Worker (local queue) | " +
        "skiplock (prefetch 5) ÷ pg-boss (default) | skiplock (prefetch 5) ÷ pg-boss (tuned) | skiplock (prefetch 20) ÷ Graphile Worker | " +
        "skiplock (prefetch 20) ÷ Graphile Worker (local queue) | skiplock (prefetch 20) ÷ pg-boss (default) | skiplock (prefetch 20) ÷ pg-boss (tuned) |"
    )
    // Memory has no meaningful ratio between systems (growth is near zero; what a system holds depends on what
    // ran before it in the process): its ratio cells stay empty.
    expect(markdown).toMatch(/\| Heap growth per 10,000 jobs[^\n]*\| KB ↓ \|[^\n]*\| – \| – \|\n/)
    expect(markdown).toMatch(/\| Heap held by the running system[^\n]*\| MB ↓ \|[^\n]*\| – \| – \|\n/)
    expect(stdout).toContain("Drain: jobs already queued")
  }, 240_000)
})
