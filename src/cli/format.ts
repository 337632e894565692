/** Plain-text output of the CLI: aligned tables and key/value blocks, no colours (they go to logs and tickets). */
import type { AuditRecord } from "../Audit.js"
import type { QueueStats } from "../app/QueueStats.js"
import { JOB_STATUSES, type JobDetails, type JobRow } from "../Jobs.js"
import { oneLine } from "../internal/describe.js"

export const iso = (date: Date | null | undefined) => (date == null ? "-" : date.toISOString())

// By code points, so that an emoji is not cut in half.
const clip = (text: string, width: number) => {
  const chars = Array.from(text)
  return chars.length <= width ? text : `${chars.slice(0, width - 1).join("")}…`
}


/** Columns padded to their widest cell; the last column is not padded. Cells are kept to one line. */
export const table = (header: ReadonlyArray<string>, cellRows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const rows = cellRows.map((row) => row.map(oneLine))
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => (row[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ").trimEnd()
  return [line(header), ...rows.map(line)].join("\n")
}

const block = (entries: ReadonlyArray<readonly [string, string]>, indent = "  ") => {
  const width = Math.max(...entries.map(([key]) => key.length))
  return entries.map(([key, value]) => `${indent}${key.padEnd(width)}  ${oneLine(value)}`).join("\n")
}

// Rounded to the unit shown before it is split, so that 7,175 s is "2h 0m", not "1h 60m".
export const formatSeconds = (seconds: number) => {
  if (Math.round(seconds * 10) < 600) return `${seconds.toFixed(1)}s`
  const wholeSeconds = Math.round(seconds)
  if (wholeSeconds < 3600) return `${Math.floor(wholeSeconds / 60)}m ${wholeSeconds % 60}s`
  const minutes = Math.round(seconds / 60)
  return `${Math.floor(minutes / 60)}h ${minutes % 60}m`
}

export const jobsTable = (jobs: ReadonlyArray<JobRow>) =>
  jobs.length === 0
    ? "no jobs"
    : table(
        ["ID", "TYPE", "STATUS", "ATTEMPTS", "ORGANIZATION", "RUN AT", "CREATED AT", "ERROR"],
        jobs.map((job) => [
          job.id,
          job.jobType,
          job.status,
          `${job.attempts}/${job.maxAttempts}`,
          job.organizationId,
          iso(job.runAt),
          iso(job.createdAt),
          clip(job.error ?? "", 60)
        ])
      )

const auditLine = (entry: AuditRecord) => [iso(entry.createdAt), entry.event, entry.actor, JSON.stringify(entry.details)]

export const jobDetails = ({ audit, job, jobId, run }: JobDetails) =>
  [
    `job ${jobId}`,
    job === null
      ? "  its row is gone from job_queue: finished jobs are deleted after the retention (WORKER_JOB_RETENTION, 7 days); its run and audit trail stay"
      : block([
          ["type", job.jobType],
          ["status", job.status],
          ["organization", job.organizationId],
          ["payload", JSON.stringify(job.payload)],
          ["attempts", `${job.attempts} of ${job.maxAttempts}`],
          ["priority", String(job.priority)],
          ["run at", iso(job.runAt)],
          ["error", job.error ?? "-"],
          ["locked by", job.lockedBy === null ? "-" : `${job.lockedBy} since ${iso(job.lockedAt)}, lease until ${iso(job.leaseExpiresAt)}`],
          ["idempotency key", job.idempotencyKey ?? "- (the job id)"],
          ["trace id", job.traceId],
          ["created", `${iso(job.createdAt)}${job.createdBy === null ? "" : ` by ${job.createdBy}`}`],
          ["updated", iso(job.updatedAt)],
          ["completed", iso(job.completedAt)]
        ]),
    "",
    "run (job_runs)",
    run === null
      ? "  none yet: the job has not been claimed"
      : block([
          ["status", run.status],
          ["idempotency", `${run.idempotencyStatus} (key ${run.idempotencyKey})`],
          ["attempts", String(run.attempts)],
          ["last error", run.lastError ?? "-"],
          ["trace id", run.traceId],
          ["worker", run.workerId ?? "-"],
          ["started", iso(run.startedAt)],
          ["finished", iso(run.finishedAt)]
        ]),
    "",
    `audit trail (${audit.length} ${audit.length === 1 ? "entry" : "entries"}, oldest first)`,
    audit.length === 0 ? "  none" : table(["TIME", "EVENT", "ACTOR", "DETAILS"], audit.map(auditLine)).replace(/^/gm, "  ")
  ].join("\n")

export const statsReport = (stats: QueueStats) => {
  const active = stats.types.filter((type) => JOB_STATUSES.some((status) => type.counts[status] > 0))
  const sections = [
    `queue at ${iso(stats.at)}`,
    "",
    active.length === 0
      ? "no jobs"
      : table(
          ["TYPE", ...JOB_STATUSES.map((status) => status.toUpperCase()), "RUNNABLE", "OLDEST RUNNABLE", "HANDLER"],
          active.map((type) => [
            type.jobType,
            ...JOB_STATUSES.map((status) => String(type.counts[status])),
            String(type.runnable),
            type.runnable > 0 ? formatSeconds(type.oldestRunnableAgeSeconds) : "-",
            type.handled ? "yes" : "no"
          ])
        ),
    "",
    stats.oldestRunnable === null
      ? "oldest runnable job: none (nothing is waiting to run)"
      : `oldest runnable job: ${stats.oldestRunnable.jobId} (${stats.oldestRunnable.jobType}), runnable since ${iso(stats.oldestRunnable.runAt)}, waiting ${formatSeconds(stats.oldestRunnable.ageSeconds)}`,
    stats.waitingWithoutHandler.length === 0
      ? "job types with waiting jobs and no handler: none"
      : `job types with waiting jobs and no handler (they wait until a worker for them runs):\n${stats.waitingWithoutHandler
          .map((type) => `  ${type.jobType}: ${type.waiting} pending`)
          .join("\n")}`,
    "",
    stats.workers.length === 0
      ? "workers: none registered"
      : `workers:\n${table(
          ["WORKER", "HOST", "PID", "STATE", "JOBS IN HAND", "LAST HEARTBEAT", "STARTED", "JOB TYPES"],
          stats.workers.map((worker) => [
            worker.workerId,
            worker.host,
            String(worker.pid),
            worker.alive ? "alive" : "gone",
            `${worker.jobsInHand}/${worker.concurrency}`,
            `${formatSeconds(worker.heartbeatAgeSeconds)} ago`,
            iso(worker.startedAt),
            worker.jobTypes.join(",")
          ])
        )}`
  ]
  return sections.join("\n")
}
