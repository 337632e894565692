// What the benchmark's report says: what each system records per job (skiplock runs with its full
// bookkeeping, the peers with theirs), and how its tables show a figure: small per-job figures keep
// two significant digits, so a cell never reads as a different value than the ratio beside it.
import { describe, expect, it } from "vitest"
import { parseConfig, type BenchConfig } from "../../bench/config.js"
import { recordsNote, renderText, type ReportInput } from "../../bench/report.js"
import { allSystems } from "../../bench/systems/index.js"

const systems = [
  { id: "skiplock", label: "skiplock", packageName: "skiplock", version: "x", configuration: "" },
  { id: "graphile-worker", label: "Graphile Worker", packageName: "graphile-worker", version: "y", configuration: "" }
]

const report = (values: Record<string, Array<number>>): ReportInput => ({
  startedAt: new Date("2026-12-05T09:00:00Z"),
  finishedAt: new Date("2026-12-05T09:13:00Z"),
  smoke: false,
  partial: false,
  environment: {},
  settings: { rounds: 1 },
  systems,
  skipped: [],
  metrics: [{ scenario: "cost", key: "cost.batch.stmts", label: "Statements per job, batch enqueue", unit: "stmts/job", better: "lower", comparable: true, values, notes: {} }],
  runs: [],
  notes: []
})

const row = (text: string) => text.split("\n").find((line) => line.startsWith("Statements per job"))!.split(/\s{2,}/).slice(2)

describe("bench report", () => {
  it("shows per-job figures below one with two significant digits at least", () => {
    // 3 statements for 2,000 jobs against 2: read as 0.002 and 0.001, they looked like twice as many.
    expect(row(renderText(report({ skiplock: [0.0015], "graphile-worker": [0.001] })))).toEqual(["0.0015", "0.0010", "1.50×"])
    expect(row(renderText(report({ skiplock: [0.2018], "graphile-worker": [0.0215] })))).toEqual(["0.202", "0.022", "9.39×"])
    expect(row(renderText(report({ skiplock: [0], "graphile-worker": [2.005] })))).toEqual(["0.000", "2.01", "0×"])
  })

  it("says what each system records per job, once per package", () => {
    const systems = allSystems(parseConfig([], {}) as BenchConfig).map((s) => ({ ...s, version: "x" }))
    expect(recordsNote(systems)).toBe(
      "Per job processed: skiplock writes its job_queue row (kept, completed), a job_runs row and two audit_logs entries " +
        "(job_started, job_completed), written in the transactions of the claim and of the completion; " +
        "graphile-worker writes its job row, deleted when the job completes; " +
        "pg-boss writes its job row, kept after completion (its maintenance deletes it 7 days later, by default)."
    )
  })
})
