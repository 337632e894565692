// The arithmetic and the domain Schemas, without a database: pro rata by days,
// VAT half up per rate and spread over the lines, IBAN checksums, periods.
import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import { periodOf } from "../../src/billing/calendar.js"
import { BillingRunPayload, Iban, NewContract } from "../../src/billing/domain.js"
import { isValidIban, makeIban, maskIban, normalizeIban } from "../../src/billing/iban.js"
import { divideRoundHalfUp, draftInvoice, formatInvoiceNumber, proRataNet, spreadVat, vatOf } from "../../src/billing/pricing.js"
import { seededRandom } from "../../src/billing/seededRandom.js"
import { formatParseError } from "../../src/JobQueue.js"

const april = periodOf("2025-04")!
const contract = (overrides: Partial<Parameters<typeof draftInvoice>[0][number]> = {}) => ({
  contractId: "k1",
  description: "Glasfaser 250 Mbit/s",
  monthlyNetCents: 3000,
  vatRateBp: 1900,
  startsOn: "2024-01-01",
  endsOn: null,
  ...overrides
})

describe("pricing", () => {
  it("rounds half up to the cent", () => {
    expect(divideRoundHalfUp(5, 2)).toBe(3)
    expect(divideRoundHalfUp(7, 2)).toBe(4)
    expect(divideRoundHalfUp(149, 100)).toBe(1)
    expect(divideRoundHalfUp(150, 100)).toBe(2)
    // 50 ct at 19 % is 9.5 ct of VAT: 10 ct. 150 ct at 7 % is 10.5 ct: 11 ct.
    expect(vatOf(50, 1900)).toBe(10)
    expect(vatOf(150, 700)).toBe(11)
    expect(vatOf(8733, 1900)).toBe(1659) // 1659.27
    expect(vatOf(1385, 700)).toBe(97) // 96.95
  })

  it("bills partial months pro rata by days, full months exactly", () => {
    expect(proRataNet(3000, 30, 30)).toBe(3000)
    expect(proRataNet(3000, 15, 30)).toBe(1500)
    expect(proRataNet(1000, 15, 31)).toBe(484) // 483.87
    expect(proRataNet(8733, 1, 31)).toBe(282) // 281.71
    expect(proRataNet(3100, 1, 31)).toBe(100)
    expect(proRataNet(62, 1, 124)).toBe(1) // exactly 0.5: up
  })

  it("drafts one line per contract active in the month, with start and end days inclusive", () => {
    const draft = draftInvoice(
      [
        contract({ contractId: "ends", startsOn: "2023-05-01", endsOn: "2025-04-10" }), // 10 of 30 days
        contract({ contractId: "starts", description: "Trinkwasser Grundpreis", monthlyNetCents: 1385, vatRateBp: 700, startsOn: "2025-04-21" }), // 10 days
        contract({ contractId: "later", startsOn: "2025-05-01" }),
        contract({ contractId: "over", startsOn: "2024-01-01", endsOn: "2025-03-31" })
      ],
      april
    )!
    expect(draft.lines.map((line) => [line.contractId, line.serviceStart, line.serviceEnd, line.daysBilled, line.netCents, line.vatCents]))
      .toEqual([
        ["ends", "2025-04-01", "2025-04-10", 10, 1000, 190],
        ["starts", "2025-04-21", "2025-04-30", 10, 462, 32] // 461.67 net; 32.34 VAT
      ])
    expect(draft.lines.map((line) => line.position)).toEqual([1, 2])
    expect(draft).toMatchObject({ netCents: 1462, vatCents: 222, grossCents: 1684 })
    // The invoice's service period spans its lines', not the whole month (§ 14 UStG: the period supplied).
    expect(draft).toMatchObject({ serviceStart: "2025-04-01", serviceEnd: "2025-04-30" })
    expect(draftInvoice([contract({ startsOn: "2025-05-01" })], april)).toBeUndefined()
    const oneDay = draftInvoice([contract({ startsOn: "2025-04-30", endsOn: "2025-04-30" })], april)!
    expect(oneDay.lines[0]!.netCents).toBe(100)
    expect(oneDay).toMatchObject({ serviceStart: "2025-04-30", serviceEnd: "2025-04-30" })
    expect(draftInvoice([contract({ startsOn: "2025-04-11" }), contract({ contractId: "k2", startsOn: "2025-04-05", endsOn: "2025-04-20" })], april))
      .toMatchObject({ serviceStart: "2025-04-05", serviceEnd: "2025-04-30" })
  })

  it("computes VAT per rate on the invoice's net at that rate, and spreads it over the lines so that they add up to it", () => {
    // Two lines of 87,33 € at 19 %: 16,5927 € each. Line by line that is 2 × 16,59 €; on their 174,66 € it is 33,19 €.
    const twice = draftInvoice([contract({ monthlyNetCents: 8733 }), contract({ contractId: "k2", monthlyNetCents: 8733 })], april)!
    expect(twice.lines.map((line) => line.vatCents)).toEqual([1660, 1659])
    expect(twice).toMatchObject({ netCents: 17466, vatCents: 3319, grossCents: 20785 })
    // Three lines of 3 cents at 19 % (0.57 cents each): 2 cents on their 9, not 1 cent each; the earlier lines get them.
    expect(spreadVat([3, 3, 3], 1900)).toEqual([1, 1, 0])
    // The cents left go to the largest remainders: 0.95 and 0.76 before 0.19.
    expect(spreadVat([1, 5, 4], 1900)).toEqual([0, 1, 1])
    // Each rate on its own: 19 % on 10,00 € + 3,33 € (190 + 63.27 cents), 7 % on 1,50 € + 1,50 € (10.5 cents each:
    // 21 cents on their 3,00 €, where rounding line by line would give 22).
    const mixed = draftInvoice([
      contract({ contractId: "a", monthlyNetCents: 1000 }),
      contract({ contractId: "b", monthlyNetCents: 150, vatRateBp: 700 }),
      contract({ contractId: "c", monthlyNetCents: 333 }),
      contract({ contractId: "d", monthlyNetCents: 150, vatRateBp: 700 })
    ], april)!
    expect(mixed.lines.map((line) => [line.contractId, line.vatCents])).toEqual([["a", 190], ["b", 11], ["c", 63], ["d", 10]])
    expect(mixed.vatCents).toBe(vatOf(1333, 1900) + vatOf(300, 700)) // 253 + 21
  })

  it("gives each rate the VAT on its net total, and each line its exact VAT rounded down or up (seeded random invoices)", () => {
    const random = seededRandom(20261207)
    const rates = [1900, 700, 0, 1000]
    for (let invoice = 0; invoice < 500; invoice++) {
      const contracts = Array.from({ length: random.int(1, 12) }, (_, n) => contract({
        contractId: `k${n}`,
        monthlyNetCents: random.chance(0.3) ? random.int(1, 99) : random.int(100, 2_000_000),
        vatRateBp: random.pick(rates),
        startsOn: random.chance(0.3) ? `2025-04-${String(random.int(1, 30)).padStart(2, "0")}` : "2024-01-01"
      }))
      const draft = draftInvoice(contracts, april)!
      for (const rate of rates) {
        const atRate = draft.lines.filter((line) => line.vatRateBp === rate)
        const sum = (cents: (line: (typeof atRate)[number]) => number) => atRate.reduce((total, line) => total + cents(line), 0)
        expect(sum((line) => line.vatCents)).toBe(vatOf(sum((line) => line.netCents), rate))
      }
      for (const line of draft.lines) {
        expect(line.vatCents).toBeGreaterThanOrEqual(Math.floor(line.netCents * line.vatRateBp / 10_000))
        expect(line.vatCents).toBeLessThanOrEqual(Math.ceil(line.netCents * line.vatRateBp / 10_000))
        expect(line.grossCents).toBe(line.netCents + line.vatCents)
      }
      expect(draft.vatCents).toBe(draft.lines.reduce((total, line) => total + line.vatCents, 0))
    }
  })

  it("leaves out lines that come to 0,00 €, and owes nothing when no line is left", () => {
    const may = periodOf("2025-05")!
    // 15 cents a month, from the month's last day: 15 × 1/31 = 0.48 cents.
    const meter = contract({ contractId: "meter", description: "Zählermiete", monthlyNetCents: 15, startsOn: "2025-05-31" })
    expect(draftInvoice([meter], may)).toMatchObject({ lines: [], zeroLinesLeftOut: 1, netCents: 0, vatCents: 0, grossCents: 0 })
    const withPower = draftInvoice([meter, contract({ contractId: "power", monthlyNetCents: 1000, startsOn: "2025-05-01" })], may)!
    expect(withPower.lines.map((line) => [line.position, line.contractId, line.grossCents])).toEqual([[1, "power", 1190]])
    expect(withPower).toMatchObject({ zeroLinesLeftOut: 1, grossCents: 1190, serviceStart: "2025-05-01", serviceEnd: "2025-05-31" })
    // Half a cent rounds up: a line of 0,01 € is owed (and a direct debit of 0,01 € is allowed).
    expect(draftInvoice([{ ...meter, startsOn: "2025-04-30" }], periodOf("2025-04")!)).toMatchObject({ zeroLinesLeftOut: 0, grossCents: 1 })
  })

  it("knows month lengths, leap years included", () => {
    expect(periodOf("2024-02")).toEqual({ period: "2024-02", start: "2024-02-01", end: "2024-02-29", days: 29 })
    expect(periodOf("2025-02")!.days).toBe(28)
    expect(periodOf("2025-12")).toMatchObject({ end: "2025-12-31", days: 31 })
    expect(periodOf("2025-13")).toBeUndefined()
    expect(periodOf("2025-1")).toBeUndefined()
  })

  it("formats invoice numbers per organization prefix and year", () => {
    expect(formatInvoiceNumber("RE", 2025, 42)).toBe("RE-2025-00042")
    expect(formatInvoiceNumber("SWM", 2026, 123456)).toBe("SWM-2026-123456")
  })
})

describe("IBAN", () => {
  it("accepts IBANs with correct check digits and rejects the rest", () => {
    expect(isValidIban("DE89370400440532013000")).toBe(true)
    expect(isValidIban("GB82WEST12345698765432")).toBe(true)
    expect(isValidIban("AT611904300234573201")).toBe(true)
    expect(isValidIban("DE89370400440532013001")).toBe(false) // one digit off
    expect(isValidIban("DE98370400440532013000")).toBe(false) // check digits swapped
    expect(isValidIban("DE8937040044053201300")).toBe(false) // 21 characters
    expect(isValidIban("de89370400440532013000")).toBe(false)
    expect(isValidIban(normalizeIban("de89 3704 0044 0532 0130 00"))).toBe(true)
  })

  it("computes check digits for a German account", () => {
    expect(makeIban("DE", "370400440532013000")).toBe("DE89370400440532013000")
  })

  it("is checked by the domain Schemas", () => {
    expect(Either.isRight(Schema.decodeUnknownEither(Iban)("DE89370400440532013000"))).toBe(true)
    const wrong = Schema.decodeUnknownEither(Iban)("DE89370400440532013001")
    expect(Either.isLeft(wrong) && wrong.left.message).toContain("check digits do not match")
    // The error reaches job_queue.error and audit_logs: it names the IBAN without its account number.
    expect(Either.isLeft(wrong) && wrong.left.message).toContain('invalid IBAN "DE89…3001"')
    expect(Either.isLeft(wrong) && wrong.left.message).not.toContain("370400440532013001")
    expect(maskIban("1234")).toBe("…")
  })
})

describe("schemas", () => {
  it("accept a billing period as YYYY-MM with optional filters", () => {
    const decode = Schema.decodeUnknownEither(BillingRunPayload)
    expect(Either.isRight(decode({ billingPeriod: "2025-03" }))).toBe(true)
    expect(Either.isRight(decode({ billingPeriod: "2025-03", customerIds: ["7d9f3a52-1c4b-4e8a-9f0d-2b6c8e1a4f37"], invoiceDate: "2025-04-01" }))).toBe(true)
    for (const billingPeriod of ["2025-13", "2025-00", "2025-3", "25-03", "2025-03-01", ""]) {
      expect(Either.isLeft(decode({ billingPeriod }))).toBe(true)
    }
    expect(Either.isLeft(decode({ billingPeriod: "2025-03", invoiceDate: "2025-02-30" }))).toBe(true)
    // A given invoice date lies from a month before the period to six months after it (a year's typo would take that year's numbers).
    for (const invoiceDate of ["2025-02-01", "2025-03-01", "2025-04-01", "2025-09-30"]) expect(Either.isRight(decode({ billingPeriod: "2025-03", invoiceDate }))).toBe(true)
    for (const invoiceDate of ["2025-01-31", "2025-10-01", "2024-04-01", "2026-04-01", "2009-01-01"]) expect(Either.isLeft(decode({ billingPeriod: "2025-03", invoiceDate }))).toBe(true)
    expect(Either.isRight(decode({ billingPeriod: "2025-12", invoiceDate: "2026-06-30" }))).toBe(true)
    const typo = decode({ billingPeriod: "2025-05", invoiceDate: "2009-01-01" })
    expect(Either.isLeft(typo) && formatParseError(typo.left)).toContain(
      "the invoice date 2009-01-01 is too far from the billing period 2025-05: give one from 2025-04-01 to the end of 2025-11"
    )
    expect(Either.isLeft(decode({ billingPeriod: "2025-03", customerIds: [] }))).toBe(true)
  })

  it("reject a contract that ends before it starts", () => {
    const decode = Schema.decodeUnknownEither(NewContract)
    const base = { customerNumber: "K-1", description: "Strom", monthlyNetCents: 100, vatRateBp: 1900, startsOn: "2025-03-10" }
    expect(Either.isRight(decode({ ...base, endsOn: "2025-03-10" }))).toBe(true)
    expect(Either.isLeft(decode({ ...base, endsOn: "2025-03-09" }))).toBe(true)
    expect(Either.isLeft(decode({ ...base, monthlyNetCents: 12.5 }))).toBe(true)
  })
})
