/**
 * The Prometheus text exposition format (version 0.0.4): metric families with
 * HELP and TYPE lines, and the conversion of Effect's metric registry into
 * families. Rendering is pure, so it is tested without a server.
 */
import { Metric, MetricKeyType, MetricState, Option } from "effect"
import type { MetricPair } from "effect"

export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

export interface Sample {
  readonly labels?: Readonly<Record<string, string>>
  readonly value: number
  /** Appended to the family name: `_bucket`, `_sum`, `_count`. */
  readonly suffix?: string
}

export interface MetricFamily {
  readonly name: string
  readonly help: string
  readonly type: "counter" | "gauge" | "histogram" | "summary" | "untyped"
  readonly samples: ReadonlyArray<Sample>
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/

export const sanitizeName = (name: string) => (NAME.test(name) ? name : name.replace(/[^a-zA-Z0-9_:]/g, "_").replace(/^([0-9])/, "_$1"))

const escapeLabel = (value: string) => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"')
const escapeHelp = (value: string) => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

const formatValue = (value: number) =>
  Number.isNaN(value) ? "NaN" : value === Infinity ? "+Inf" : value === -Infinity ? "-Inf" : String(value)

const formatLabels = (labels: Readonly<Record<string, string>> | undefined) => {
  const entries = Object.entries(labels ?? {})
  return entries.length === 0 ? "" : `{${entries.map(([key, value]) => `${sanitizeName(key)}="${escapeLabel(value)}"`).join(",")}}`
}

/** Renders families; two families of one name are merged (the first HELP and TYPE win). */
export const render = (families: ReadonlyArray<MetricFamily>): string => {
  const merged = new Map<string, MetricFamily>()
  for (const family of families) {
    const name = sanitizeName(family.name)
    const previous = merged.get(name)
    merged.set(name, previous === undefined ? { ...family, name } : { ...previous, samples: [...previous.samples, ...family.samples] })
  }
  const lines: Array<string> = []
  for (const family of merged.values()) {
    lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`, `# TYPE ${family.name} ${family.type}`)
    for (const sample of family.samples) {
      lines.push(`${family.name}${sample.suffix ?? ""}${formatLabels(sample.labels)} ${formatValue(sample.value)}`)
    }
  }
  return lines.join("\n") + "\n"
}

/** Effect's metrics (counters, gauges, histograms, summaries, frequencies) as Prometheus families. */
export const fromEffectMetrics = (pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>): ReadonlyArray<MetricFamily> =>
  pairs.flatMap((pair): ReadonlyArray<MetricFamily> => {
    const key = pair.metricKey
    const state = pair.metricState
    const name = sanitizeName(key.name)
    const help = Option.getOrElse(key.description, () => key.name)
    const labels = Object.fromEntries(key.tags.map((tag) => [tag.key, tag.value]))
    if (MetricState.isCounterState(state)) {
      // A counter that may go down (not `incremental`) is a gauge to Prometheus.
      const incremental = MetricKeyType.isCounterKey(key.keyType) && key.keyType.incremental
      return [{ name, help, type: incremental ? "counter" : "gauge", samples: [{ labels, value: Number(state.count) }] }]
    }
    if (MetricState.isGaugeState(state)) {
      return [{ name, help, type: "gauge", samples: [{ labels, value: Number(state.value) }] }]
    }
    if (MetricState.isHistogramState(state)) {
      return [{
        name,
        help,
        type: "histogram",
        samples: [
          ...state.buckets.map(([boundary, count]) => ({ suffix: "_bucket", labels: { ...labels, le: formatValue(boundary) }, value: count })),
          { suffix: "_sum", labels, value: state.sum },
          { suffix: "_count", labels, value: state.count }
        ]
      }]
    }
    if (MetricState.isSummaryState(state)) {
      return [{
        name,
        help,
        type: "summary",
        samples: [
          ...state.quantiles.flatMap(([quantile, value]) =>
            Option.isSome(value) ? [{ labels: { ...labels, quantile: String(quantile) }, value: value.value }] : []
          ),
          { suffix: "_sum", labels, value: state.sum },
          { suffix: "_count", labels, value: state.count }
        ]
      }]
    }
    if (MetricState.isFrequencyState(state)) {
      return [{
        name,
        help,
        type: "counter",
        samples: [...state.occurrences.entries()].map(([occurrence, count]) => ({ labels: { ...labels, key: occurrence }, value: count }))
      }]
    }
    return []
  })

/** The current snapshot of Effect's global metric registry. */
export const effectMetrics = Metric.snapshot
