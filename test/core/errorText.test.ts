// The text a failed attempt records (job_queue.error, job_runs.last_error, the audit entry): an
// error's tag, its message, and for a tagged error without a message, its fields.
import { describe, expect, it } from "@effect/vitest"
import { Cause, Data } from "effect"
import { describeCause } from "../../src/internal/executeJob.js"

class Bank extends Data.TaggedError("Bank")<{ readonly message: string }> {}
class LedgerLocked extends Data.TaggedError("LedgerLocked")<{ readonly ledgerId: string }> {}
class Empty extends Data.TaggedError("Empty")<{}> {}
class Cyclic extends Data.TaggedError("Cyclic")<{ readonly self: unknown }> {}

const text = (error: unknown) => describeCause(Cause.fail(error))

describe("error texts", () => {
  it("prefix the tag unless the message already starts with it and a colon", () => {
    expect(text(new Bank({ message: "Bankruptcy of the counterparty" }))).toBe("Bank: Bankruptcy of the counterparty")
    expect(text(new Bank({ message: "Bank: file rejected" }))).toBe("Bank: file rejected")
    expect(text(new Bank({ message: "Bank" }))).toBe("Bank")
  })

  it("keep a tagged error's fields when it has no message", () => {
    expect(text(new LedgerLocked({ ledgerId: "L-1" }))).toBe(`LedgerLocked {"ledgerId":"L-1"}`)
    expect(text(new Empty())).toBe("Empty")
    const cyclic: { self?: unknown } = {}
    cyclic.self = cyclic
    expect(text(new Cyclic({ self: cyclic }))).toBe("Cyclic (fields self)")
  })

  it("say what a defect was", () => {
    expect(describeCause(Cause.die(new Error("boom")))).toBe("defect: boom")
  })
})
