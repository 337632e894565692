// Which files a benchmark run writes: `latest` is always the latest full run
// (the README copies it), so smoke runs and runs of some scenarios or systems
// only write files of their own.
import { mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { writeResults, type ReportInput } from "../../bench/report.js"

const run = (kind: { smoke: boolean; partial: boolean }): ReportInput => ({
  startedAt: new Date("2026-12-05T09:00:00Z"),
  finishedAt: new Date("2026-12-05T09:13:00Z"),
  ...kind,
  environment: { node: "20", postgres: "PostgreSQL 15", cpus: 2, cpuModel: "CPU", memory: "24 GiB RAM" },
  settings: { rounds: 1 },
  systems: [],
  skipped: [],
  metrics: [],
  runs: [],
  notes: []
})

describe("benchmark results", () => {
  const dirs: Array<string> = []
  const written = (kind: { smoke: boolean; partial: boolean }) => {
    const dir = mkdtempSync(join(tmpdir(), "skiplock-bench-results-"))
    dirs.push(dir)
    writeResults(dir, run(kind))
    return readdirSync(dir).sort()
  }
  afterAll(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })))

  it("names a full run latest", () => {
    expect(written({ smoke: false, partial: false })).toEqual(["2026-12-05T09-00-00-000Z.json", "latest.json", "latest.md"])
  })

  it("keeps partial and smoke runs out of latest", () => {
    expect(written({ smoke: false, partial: true })).toEqual(["partial-2026-12-05T09-00-00-000Z.json", "partial-latest.json", "partial-latest.md"])
    expect(written({ smoke: true, partial: true })).toEqual(["smoke-2026-12-05T09-00-00-000Z.json", "smoke-latest.json", "smoke-latest.md"])
  })
})
