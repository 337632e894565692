/**
 * CPU time spent on a piece of work, on both sides of the connection: this
 * Node process (the system's worker and the harness, which is the same for
 * every system) and the PostgreSQL server. The server's share is read from
 * /proc, so it is only known when the server runs on this host and its
 * processes are readable; otherwise it is reported as unknown, never guessed.
 */
import { readdirSync, readFileSync } from "node:fs"

/** This process's user + system CPU time so far, in microseconds. */
export const processCpuMicros = (): number => {
  const usage = process.cpuUsage()
  return usage.user + usage.system
}

const LOCAL_HOSTS = new Set(["", "localhost", "127.0.0.1", "[::1]", "::1"])

/** Whether the server URL names this host (a socket directory or a loopback address). */
export const serverIsLocal = (serverUrl: string): boolean => {
  const url = new URL(serverUrl)
  const socketHost = url.searchParams.get("host")
  return socketHost !== null ? socketHost.startsWith("/") : LOCAL_HOSTS.has(url.hostname)
}

// /proc/<pid>/stat counts in clock ticks; Linux reports 100 per second to user space on every
// architecture it runs on (USER_HZ), whatever the kernel's own tick rate.
const MICROS_PER_TICK = 10_000

/**
 * CPU time of every process named `postgres` on this host (postmaster,
 * backends, background workers), in microseconds, or undefined when there is
 * no /proc or no such process. Backends that exited are included through their
 * parent's cutime/cstime, so the sum only grows while the server runs.
 */
export const serverCpuMicros = (): number | undefined => {
  let pids: Array<string>
  try {
    pids = readdirSync("/proc").filter((name) => /^\d+$/.test(name))
  } catch {
    return undefined
  }
  let ticks = 0
  let found = 0
  for (const pid of pids) {
    let stat: string
    try {
      stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    } catch {
      continue // exited since the directory was read
    }
    const parsed = parseStat(stat)
    if (parsed.command !== "postgres") continue
    ticks += parsed.utime + parsed.stime + parsed.cutime + parsed.cstime
    found++
  }
  return found === 0 ? undefined : ticks * MICROS_PER_TICK
}

/** One process's own CPU time (user and system, in microseconds), or undefined when /proc has no such process. */
export const processCpuOf = (pid: number): { user: number; system: number } | undefined => {
  let stat: string
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  } catch {
    return undefined
  }
  const { utime, stime } = parseStat(stat)
  return { user: utime * MICROS_PER_TICK, system: stime * MICROS_PER_TICK }
}

const parseStat = (stat: string) => {
  // "pid (comm) state ppid …": comm may hold spaces, so split after its closing parenthesis.
  const close = stat.lastIndexOf(")")
  const fields = stat.slice(close + 2).split(" ")
  // Fields 14-17 of stat(5) (utime, stime, cutime, cstime) are 11-14 here: the list starts at field 3.
  return {
    command: stat.slice(stat.indexOf("(") + 1, close),
    utime: Number(fields[11]),
    stime: Number(fields[12]),
    cutime: Number(fields[13]),
    cstime: Number(fields[14])
  }
}
