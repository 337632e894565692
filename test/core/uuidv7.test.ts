// Time-ordered job ids: the layout RFC 9562 gives UUIDv7, and their order.
import { describe, expect, it } from "@effect/vitest"
import { uuidv7, uuidv7Millis } from "../../src/internal/uuidv7.js"

const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

describe("uuidv7", () => {
  it("carries the milliseconds in its first 48 bits, version 7 and variant 10", () => {
    const millis = Date.UTC(2026, 10, 29, 14, 0, 0, 123)
    const id = uuidv7(millis)
    expect(id).toMatch(V7)
    expect(id.slice(0, 13)).toBe(`${millis.toString(16).padStart(12, "0").slice(0, 8)}-${millis.toString(16).padStart(12, "0").slice(8)}`)
    expect(uuidv7Millis(id)).toBe(millis)
  })

  it("ids made later sort after earlier ones, also within one millisecond and when the clock steps back", () => {
    const millis = Date.UTC(2027, 0, 1)
    const ids = [
      ...Array.from({ length: 1000 }, () => uuidv7(millis)),
      uuidv7(millis - 5_000), // the wall clock stepped back: the id still sorts last
      ...Array.from({ length: 10 }, (_, i) => uuidv7(millis + 1 + i))
    ]
    expect(ids.slice().sort()).toEqual(ids)
    expect(new Set(ids).size).toBe(ids.length)
    for (const id of ids) expect(id).toMatch(V7)
  })

  it("after 4,096 ids in one millisecond it moves on to the next, and stays in order", () => {
    const millis = Date.UTC(2027, 5, 1)
    const ids = Array.from({ length: 5000 }, () => uuidv7(millis))
    expect(ids.slice().sort()).toEqual(ids)
    expect(uuidv7Millis(ids[0]!)).toBe(millis)
    expect(uuidv7Millis(ids[4095]!)).toBe(millis)
    expect(uuidv7Millis(ids[4096]!)).toBe(millis + 1)
  })
})
