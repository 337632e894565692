// The bench's CPU readings: which server URLs count as this host (only then is the
// server's CPU read from /proc), and that the readings only grow.
import { describe, expect, it } from "vitest"
import { processCpuMicros, serverCpuMicros, serverIsLocal } from "../../bench/cpu.js"

describe("bench CPU readings", () => {
  it("counts loopback addresses and socket directories as this host, other hosts not", () => {
    expect(serverIsLocal("postgres://postgres@127.0.0.1:5432/postgres")).toBe(true)
    expect(serverIsLocal("postgres://postgres@localhost/postgres")).toBe(true)
    expect(serverIsLocal("postgres://postgres@[::1]:5432/postgres")).toBe(true)
    expect(serverIsLocal("postgres:///postgres?host=/var/run/postgresql")).toBe(true)
    expect(serverIsLocal("postgres://postgres@db.internal:5432/postgres")).toBe(false)
    expect(serverIsLocal("postgres://postgres@10.0.0.7/postgres?host=db.internal")).toBe(false)
  })

  it("reads this process's CPU time, growing with work", () => {
    const before = processCpuMicros()
    let x = 0
    for (let i = 0; i < 5_000_000; i++) x += i % 7
    expect(x).toBeGreaterThan(0)
    expect(processCpuMicros()).toBeGreaterThan(before)
  })

  it("reads the local server's CPU time when its processes are visible, and it never shrinks", () => {
    const serverUrl = process.env.DATABASE_URL || process.env.SKIPLOCK_TEST_ADMIN_URL || ""
    const first = serverCpuMicros()
    // The test run's server (globalSetup found or started it) is local unless DATABASE_URL names another host.
    if (serverUrl === "" || serverIsLocal(serverUrl)) expect(first, "no process named postgres is readable in /proc").toBeDefined()
    if (first !== undefined) expect(serverCpuMicros()!).toBeGreaterThanOrEqual(first)
  })
})
