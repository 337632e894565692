/** Turns the collected metrics into the stdout table, the markdown file and the JSON document. */
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import type { ScenarioName } from "./config.js"
import type { Metric } from "./scenarios/common.js"
import { pairedRatios, summarize, type Summary } from "./stats.js"

export interface SystemInfo {
  readonly id: string
  readonly label: string
  readonly packageName: string
  readonly version: string
  readonly configuration: string
  /** A skiplock variant whose own ratio to each peer gets columns too (beside skiplock's). */
  readonly comparedWithPeers?: boolean
  /** What a processed job leaves in the database. */
  readonly recordsPerJob?: string
}

export interface ReportInput {
  readonly startedAt: Date
  readonly finishedAt: Date
  readonly smoke: boolean
  /** Only some scenarios or systems ran: not a full run, so not what `latest` names. */
  readonly partial: boolean
  readonly environment: Record<string, unknown>
  readonly settings: Record<string, unknown>
  readonly systems: ReadonlyArray<SystemInfo>
  readonly skipped: ReadonlyArray<{ readonly id: string; readonly reason: string }>
  readonly metrics: ReadonlyArray<Metric>
  readonly runs: ReadonlyArray<Record<string, unknown>>
  readonly notes: ReadonlyArray<string>
}

const REFERENCE = "skiplock"

const SCENARIO_TITLES: Record<ScenarioName, string> = {
  drain: "Drain: jobs already queued, processed until the queue is empty",
  latency: "Latency: one job at a time into an idle queue",
  enqueue: "Enqueue throughput (no workers running)",
  history: "History: finished jobs kept in the table",
  cost: "Cost per job (database work and CPU)",
  memory: "Memory: the Node heap of a running system"
}

export interface MetricSummary {
  readonly key: string
  readonly perSystem: Record<string, Summary | null>
  /** skiplock ÷ peer, computed per round, summarised over rounds. */
  readonly ratioToPeer: Record<string, Summary | null>
  /** For each variant compared with peers: variant ÷ peer (peers: systems that are not skiplock). */
  readonly variantRatioToPeer: Record<string, Record<string, Summary | null>>
}

/** The note on what each system records per job processed: one entry per package (its variants record the same). */
export const recordsNote = (systems: ReadonlyArray<SystemInfo>): string | undefined => {
  const byPackage = new Map<string, string>()
  for (const s of systems) {
    if (s.recordsPerJob !== undefined && !byPackage.has(s.packageName)) byPackage.set(s.packageName, s.recordsPerJob)
  }
  if (byPackage.size === 0) return undefined
  return `Per job processed: ${[...byPackage].map(([name, records]) => `${name} writes ${records}`).join("; ")}.`
}

const isPeer = (system: SystemInfo) => system.packageName !== "skiplock"

export const summarizeMetrics = (metrics: ReadonlyArray<Metric>, systems: ReadonlyArray<SystemInfo>): Array<MetricSummary> =>
  metrics.map((m) => {
    const perSystem: Record<string, Summary | null> = {}
    for (const s of systems) perSystem[s.id] = summarize((m.values[s.id] ?? []).filter((v): v is number => v !== null))
    const ratiosTo = (values: ReadonlyArray<number | null> | undefined, peers: ReadonlyArray<SystemInfo>) =>
      Object.fromEntries(peers.map((s) => [s.id, values === undefined ? null : summarize(pairedRatios(values, m.values[s.id] ?? []))]))
    const ratioToPeer = ratiosTo(m.values[REFERENCE], systems.filter((s) => s.id !== REFERENCE))
    const variantRatioToPeer = Object.fromEntries(
      systems.filter((s) => s.comparedWithPeers === true).map((v) => [v.id, ratiosTo(m.values[v.id], systems.filter(isPeer))])
    )
    return { key: m.key, perSystem, ratioToPeer, variantRatioToPeer }
  })

const decimals = (unit: string, value: number): number => {
  const abs = Math.abs(value)
  if (unit === "jobs/s") return abs >= 100 ? 0 : 1
  if (unit === "×") return 2
  if (abs >= 100) return 0
  if (abs >= 10) return 1
  if (abs >= 1) return 2
  // Two significant digits at least: 0.0015 statements a job must not read as 0.002 beside 0.001.
  return abs === 0 ? 3 : Math.min(20, Math.max(3, 1 - Math.floor(Math.log10(abs))))
}

const fmt = (value: number, digits: number): string =>
  value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })

const cell = (summary: Summary | null, unit: string, marker: string): string => {
  if (summary === null) return "–"
  const main = fmt(summary.median, decimals(unit, summary.median))
  const spread = summary.n > 1 ? ` ±${summary.spreadPct < 10 ? summary.spreadPct.toFixed(1) : Math.round(summary.spreadPct)}%` : ""
  return `${main}${spread}${marker}`
}

const ratio = (value: number): string => {
  if (value === 0) return "0"
  if (Math.abs(value) < 0.1) return value.toPrecision(2)
  return fmt(value, Math.abs(value) >= 100 ? 0 : 2)
}

const ratioCell = (summary: Summary | null | undefined): string => {
  if (summary === null || summary === undefined) return "–"
  const main = `${ratio(summary.median)}×`
  return summary.n > 1 ? `${main} (${ratio(summary.min)}–${ratio(summary.max)})` : main
}

const noteText = (notes: Record<string, Array<number>>, rounds: number): string =>
  Object.entries(notes)
    .map(([text, applied]) => `${text} (${rounds > 1 ? (applied.length === rounds ? "every round" : `${applied.length} of ${rounds} rounds`) : "the only round"})`)
    .join("; ")

interface Table {
  readonly title: string
  readonly header: Array<string>
  readonly rows: Array<Array<string>>
  readonly footnotes: Array<string>
}

const buildTables = (input: ReportInput): Array<Table> => {
  const summaries = new Map(summarizeMetrics(input.metrics, input.systems).map((s) => [s.key, s]))
  const tables: Array<Table> = []
  const scenarios = [...new Set(input.metrics.map((m) => m.scenario))]
  let footnoteCount = 0
  for (const scenario of scenarios) {
    const metrics = input.metrics.filter((x) => x.scenario === scenario)
    // Columns for the systems that ran in this scenario (some run in a few only).
    const systems = input.systems.filter((s) => metrics.some((m) => (m.values[s.id] ?? []).length > 0))
    const hasRef = systems.some((s) => s.id === REFERENCE)
    const peers = systems.filter((s) => s.id !== REFERENCE)
    const variantPairs = systems.filter((s) => s.comparedWithPeers === true).flatMap((v) => systems.filter(isPeer).map((p) => [v, p] as const))
    const header = [
      "Metric",
      "Unit",
      ...systems.map((s) => s.label),
      ...(hasRef ? peers.map((p) => `skiplock ÷ ${p.label}`) : []),
      ...variantPairs.map(([v, p]) => `${v.label} ÷ ${p.label}`)
    ]
    const rows: Array<Array<string>> = []
    const footnotes: Array<string> = []
    for (const m of metrics) {
      const summary = summaries.get(m.key)!
      const cells = systems.map((s) => {
        const notes = m.notes[s.id] ?? {}
        if (Object.keys(notes).length === 0) return cell(summary.perSystem[s.id] ?? null, m.unit, "")
        footnoteCount++
        footnotes.push(`[${footnoteCount}] ${s.label}, ${m.label}: ${noteText(notes, (m.values[s.id] ?? []).length)}`)
        return cell(summary.perSystem[s.id] ?? null, m.unit, ` [${footnoteCount}]`)
      })
      const unit = `${m.unit} ${m.better === "higher" ? "↑" : "↓"}`
      rows.push([
        m.label,
        unit,
        ...cells,
        ...(hasRef ? peers.map((p) => (m.comparable ? ratioCell(summary.ratioToPeer[p.id]) : "–")) : []),
        ...variantPairs.map(([v, p]) => (m.comparable ? ratioCell(summary.variantRatioToPeer[v.id]?.[p.id]) : "–"))
      ])
    }
    tables.push({ title: SCENARIO_TITLES[scenario], header, rows, footnotes })
  }
  return tables
}

const preamble = (input: ReportInput): Array<string> => {
  const rounds = input.settings.rounds
  return [
    `Median over rounds, ± is half the min–max range as a percentage of the median (${String(rounds)} rounds${input.smoke ? ", SMOKE RUN: numbers are meaningless" : ""}).`,
    "↑ higher is better, ↓ lower is better. skiplock ÷ peer is computed per round from the same round's runs; median (min–max) over rounds.",
    "Each run gets its own fresh database on the same server; systems alternate within every round, in reverse order every other round."
  ]
}

export const renderText = (input: ReportInput): string => {
  const out: Array<string> = []
  out.push(...preamble(input), "")
  for (const table of buildTables(input)) {
    out.push(table.title)
    const widths = table.header.map((h, i) => Math.max(h.length, ...table.rows.map((r) => r[i]!.length)))
    const line = (cells: ReadonlyArray<string>) =>
      cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd()
    out.push(line(table.header), widths.map((w) => "-".repeat(w)).join("  "))
    for (const row of table.rows) out.push(line(row))
    for (const f of table.footnotes) out.push(`  ${f}`)
    out.push("")
  }
  if (input.skipped.length > 0) {
    for (const s of input.skipped) out.push(`Not run: ${s.id}: ${s.reason}`)
    out.push("")
  }
  for (const note of input.notes) out.push(`Note: ${note}`)
  return out.join("\n")
}

const mdEscape = (s: string) => s.replace(/\|/g, "\\|")

export const renderMarkdown = (input: ReportInput): string => {
  const env = input.environment
  const out: Array<string> = []
  out.push(`### Benchmark: skiplock vs Graphile Worker vs pg-boss${input.smoke ? " (smoke run)" : ""}`, "")
  out.push(
    `Run ${input.finishedAt.toISOString().slice(0, 16).replace("T", " ")} UTC with \`npm run bench\`; ` +
      `Node ${String(env.node)}, ${String(env.postgres)}, ${String(env.cpus)} × ${String(env.cpuModel)}, ${String(env.memory)}. ` +
      `Harness and workers share one Node process; PostgreSQL runs on the same machine` +
      (typeof env.loadAverage1m === "object" && env.loadAverage1m !== null
        ? ` (1-minute load average ${String((env.loadAverage1m as { start: number }).start)} at the start, ${String((env.loadAverage1m as { end: number }).end)} at the end).`
        : "."),
    ""
  )
  out.push("| System | Version | Configuration |", "| --- | --- | --- |")
  for (const s of input.systems) out.push(`| ${mdEscape(s.label)} | ${mdEscape(`${s.packageName}@${s.version}`)} | ${mdEscape(s.configuration)} |`)
  out.push("")
  out.push(...preamble(input).map((l) => `${l}  `), "")
  for (const table of buildTables(input)) {
    out.push(`#### ${table.title}`, "")
    out.push(`| ${table.header.map(mdEscape).join(" | ")} |`)
    out.push(`| ${table.header.map((_, i) => (i < 2 ? "---" : "---:")).join(" | ")} |`)
    for (const row of table.rows) out.push(`| ${row.map(mdEscape).join(" | ")} |`)
    if (table.footnotes.length > 0) {
      out.push("")
      for (const f of table.footnotes) out.push(`${mdEscape(f)}  `)
    }
    out.push("")
  }
  if (input.skipped.length > 0) {
    for (const s of input.skipped) out.push(`- Not run: **${s.id}**: ${s.reason}`)
    out.push("")
  }
  for (const note of input.notes) out.push(`- ${note}`)
  return `${out.join("\n").trimEnd()}\n`
}

export const toJson = (input: ReportInput) => ({
  startedAt: input.startedAt.toISOString(),
  finishedAt: input.finishedAt.toISOString(),
  durationSeconds: Math.round((input.finishedAt.getTime() - input.startedAt.getTime()) / 100) / 10,
  smoke: input.smoke,
  partial: input.partial,
  environment: input.environment,
  settings: input.settings,
  systems: input.systems,
  skipped: input.skipped,
  notes: input.notes,
  metrics: input.metrics.map((m) => ({ ...m, ...summarizeMetrics([m], input.systems)[0]! })),
  runs: input.runs
})

/**
 * Writes `<stamp>.json`, `latest.json` and `latest.md` (prefixed `smoke-` for smoke runs and `partial-` for runs of
 * some scenarios or systems only, so that `latest` is always the latest full run); returns the paths.
 */
export const writeResults = (dir: string, input: ReportInput): Array<string> => {
  mkdirSync(dir, { recursive: true })
  const prefix = input.smoke ? "smoke-" : input.partial ? "partial-" : ""
  const stamp = input.startedAt.toISOString().replace(/[:.]/g, "-")
  const json = `${JSON.stringify(toJson(input), null, 2)}\n`
  const paths = [join(dir, `${prefix}${stamp}.json`), join(dir, `${prefix}latest.json`), join(dir, `${prefix}latest.md`)]
  writeFileSync(paths[0]!, json)
  writeFileSync(paths[1]!, json)
  writeFileSync(paths[2]!, renderMarkdown(input))
  return paths
}
