// The README's "Latest run" section is the latest full benchmark run, as
// bench/results/latest.md has it: a full `npm run bench` writes both, and this
// test fails when one was edited or replaced without the other.
import { readFileSync } from "node:fs"
import { resolve } from "node:path"
import { describe, expect, it } from "vitest"
import { LATEST_RUN_END, LATEST_RUN_START, latestRunIn, readmeCopy, withLatestRun } from "../../bench/readme.js"

const root = resolve(import.meta.dirname, "..", "..")
const read = (path: string) => readFileSync(resolve(root, path), "utf8")

const RUN = "### Benchmark: skiplock vs Graphile Worker vs pg-boss\n\nRun 2026-12-05 07:54 UTC\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n"
const README = ["# Title", "", "### Latest run", "", LATEST_RUN_START, "", "old table", "", LATEST_RUN_END, "", "## Next", ""].join("\n")

describe("the README's latest benchmark run", () => {
  it("is bench/results/latest.md, without its title", () => {
    expect(latestRunIn(read("README.md"))).toBe(readmeCopy(read("bench/results/latest.md")))
  })

  it("is replaced between the markers and nowhere else", () => {
    const written = withLatestRun(README, RUN)
    expect(written).toBe(
      ["# Title", "", "### Latest run", "", LATEST_RUN_START, "", "Run 2026-12-05 07:54 UTC", "", "| a | b |", "| --- | --- |", "| 1 | 2 |", "", LATEST_RUN_END, "", "## Next", ""].join("\n")
    )
    expect(latestRunIn(written)).toBe(readmeCopy(RUN))
    // Writing the same run again changes nothing.
    expect(withLatestRun(written, RUN)).toBe(written)
  })

  it("refuses a README whose markers are missing, repeated or out of order, naming the problem", () => {
    expect(() => withLatestRun("# no markers\n", RUN)).toThrow(/marker start not found/)
    expect(() => withLatestRun(`${LATEST_RUN_START}\n`, RUN)).toThrow(/marker end not found/)
    expect(() => withLatestRun(`${README}${LATEST_RUN_START}\n`, RUN)).toThrow(/appears more than once/)
    expect(() => withLatestRun(`${LATEST_RUN_END}\n${LATEST_RUN_START}\n`, RUN)).toThrow(/end marker comes before the start marker/)
  })
})
