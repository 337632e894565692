// The CLI's plain-text output: durations rounded before they are split into units, and every
// cell and value on one line, whatever an error text or a reason holds.
import { describe, expect, it } from "@effect/vitest"
import { formatSeconds, table } from "../../src/cli/format.js"

describe("CLI output", () => {
  it("durations carry over instead of showing 60 in a unit", () => {
    expect(formatSeconds(12.34)).toBe("12.3s")
    expect(formatSeconds(59.96)).toBe("1m 0s")
    expect(formatSeconds(119.6)).toBe("2m 0s")
    expect(formatSeconds(3599.6)).toBe("1h 0m")
    expect(formatSeconds(7175)).toBe("2h 0m")
    expect(formatSeconds(7_265)).toBe("2h 1m")
  })

  it("a table keeps each row on one line: line breaks and control characters are escaped", () => {
    const lines = table(["ID", "ERROR"], [["a", "bank said:\nERROR 42\r\tdone\u0007"], ["b", "ok"]]).split("\n")
    expect(lines).toEqual(["ID  ERROR", "a   bank said:\\nERROR 42\\r\\tdone\\u0007", "b   ok"])
  })
})
