/**
 * The README's copy of the latest full run: the markdown of
 * `bench/results/latest.md`, between two marker comments. A full
 * `npm run bench` writes it there; test/bench/readme.test.ts checks that the
 * two agree, so the README never shows tables from another run than the
 * results file it names.
 */
import { readFileSync, writeFileSync } from "node:fs"

export const LATEST_RUN_START = "<!-- bench:latest-run:start (written by npm run bench; do not edit by hand) -->"
export const LATEST_RUN_END = "<!-- bench:latest-run:end -->"

const markerError = (problem: string) =>
  new Error(`README: ${problem}; the latest run goes between the lines\n  ${LATEST_RUN_START}\n  ${LATEST_RUN_END}`)

/** Where the block's content starts and ends in `readme` (between the two marker lines). */
const blockBounds = (readme: string): { readonly from: number; readonly to: number } => {
  const start = readme.indexOf(LATEST_RUN_START)
  const end = readme.indexOf(LATEST_RUN_END)
  if (start < 0 || end < 0) throw markerError(`marker ${start < 0 ? "start" : "end"} not found`)
  if (readme.indexOf(LATEST_RUN_START, start + 1) >= 0 || readme.indexOf(LATEST_RUN_END, end + 1) >= 0) {
    throw markerError("a marker appears more than once")
  }
  if (end < start) throw markerError("the end marker comes before the start marker")
  return { from: start + LATEST_RUN_START.length, to: end }
}

/** The block's content as the README holds it (without the blank lines around it). */
export const latestRunIn = (readme: string): string => {
  const { from, to } = blockBounds(readme)
  return readme.slice(from, to).trim()
}

/** What of a run's markdown (`latest.md`) the README holds: all but its title, since the README has its own heading. */
export const readmeCopy = (markdown: string): string => markdown.replace(/^### [^\n]*\n+/, "").trim()

/** `readme` with the block replaced by the run's markdown; everything outside the markers stays as it was. */
export const withLatestRun = (readme: string, markdown: string): string => {
  const { from, to } = blockBounds(readme)
  return `${readme.slice(0, from)}\n\n${readmeCopy(markdown)}\n\n${readme.slice(to)}`
}

/** Rewrites the README file's block with `markdown`. */
export const writeLatestRun = (readmePath: string, markdown: string): void => {
  writeFileSync(readmePath, withLatestRun(readFileSync(readmePath, "utf8"), markdown))
}
