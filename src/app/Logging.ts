/**
 * Log output: JSON lines in production, pretty in a terminal (LOG_FORMAT=auto),
 * at LOG_LEVEL. Job log lines carry jobId, jobType, organizationId and traceId
 * as annotations, which both formats print.
 */
import { Layer, Logger } from "effect"
import type { LogConfig, LogFormat } from "../config/ServiceConfig.js"

/** The format `auto` stands for here: pretty when stdout is a terminal, else JSON. */
export const resolveFormat = (format: LogFormat): Exclude<LogFormat, "auto"> =>
  format !== "auto" ? format : process.stdout.isTTY ? "pretty" : "json"

export const layer = (config: LogConfig): Layer.Layer<never> => {
  const format = resolveFormat(config.format)
  const logger = format === "json" ? Logger.json : format === "pretty" ? Logger.pretty : Logger.logFmt
  return Layer.merge(logger, Logger.minimumLogLevel(config.level))
}
