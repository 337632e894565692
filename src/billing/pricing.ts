/**
 * What a customer owes for a month: pure arithmetic on integer cents.
 *
 * Partial months are billed pro rata by days: a contract active on d of the
 * month's D days (start and end dates inclusive) costs monthly × d / D,
 * rounded half up to the cent; a full month costs exactly the monthly amount.
 * VAT is computed per rate on the invoice's net at that rate, rounded half up to
 * the cent once (as EN 16931, the e-invoice standard, computes it: rate × the
 * rate's taxable amount), and spread over the lines of that rate so that they add
 * up to it: each line's VAT is its exact VAT rounded down or up. Rounded line by
 * line, ten lines at one rate could be off by up to five cents.
 * A line that comes to 0,00 € (a few cents a month, billed for a day) is left
 * out, and an invoice none of whose lines is left is not issued: it would use
 * up an invoice number, and a SEPA direct debit needs at least 0,01 €.
 */
import { dayNumber, fromDayNumber, type Period } from "./calendar.js"

/** n / d rounded half up, for n ≥ 0 and d > 0, in integers only. */
export const divideRoundHalfUp = (numerator: number, denominator: number): number => {
  if (!Number.isSafeInteger(numerator) || !Number.isSafeInteger(2 * numerator + denominator)) {
    throw new RangeError(`amount out of the safe integer range: ${numerator}`)
  }
  return Math.floor((2 * numerator + denominator) / (2 * denominator))
}

/** The net amount for `daysBilled` of a month of `daysInPeriod` days. */
export const proRataNet = (monthlyNetCents: number, daysBilled: number, daysInPeriod: number): number =>
  daysBilled === daysInPeriod ? monthlyNetCents : divideRoundHalfUp(monthlyNetCents * daysBilled, daysInPeriod)

/** VAT on a net amount; the rate is in basis points (1900 = 19 %). */
export const vatOf = (netCents: number, vatRateBp: number): number => divideRoundHalfUp(netCents * vatRateBp, 10_000)

/**
 * The VAT of lines that share a rate: the VAT on their net total, spread over them. Each line gets its
 * exact VAT rounded down, and the cents left go one each to the lines with the largest remainders (the
 * earlier line first on a tie), so each gets its exact VAT rounded down or up, and together the VAT on
 * their total. For nets of 0 or more, as `divideRoundHalfUp`: a credit note negates its invoice's amounts
 * rather than computing VAT of its own.
 */
export const spreadVat = (netCents: ReadonlyArray<number>, vatRateBp: number): ReadonlyArray<number> => {
  const total = vatOf(netCents.reduce((sum, net) => sum + net, 0), vatRateBp)
  const exact = netCents.map((net) => net * vatRateBp)
  const vat = exact.map((tenThousandths) => Math.floor(tenThousandths / 10_000))
  const left = total - vat.reduce((sum, cents) => sum + cents, 0)
  const byRemainder = exact.map((tenThousandths, index) => ({ index, remainder: tenThousandths % 10_000 }))
    .sort((a, b) => b.remainder - a.remainder || a.index - b.index)
  for (const { index } of byRemainder.slice(0, left)) vat[index]! += 1
  return vat
}

export interface BillableContract {
  readonly contractId: string
  readonly description: string
  readonly monthlyNetCents: number
  readonly vatRateBp: number
  /** ISO date, inclusive. */
  readonly startsOn: string
  /** ISO date, inclusive; null: open-ended. */
  readonly endsOn: string | null
}

export interface InvoiceLineDraft {
  readonly position: number
  readonly contractId: string
  readonly description: string
  readonly serviceStart: string
  readonly serviceEnd: string
  readonly daysBilled: number
  readonly daysInPeriod: number
  readonly monthlyNetCents: number
  readonly netCents: number
  readonly vatRateBp: number
  readonly vatCents: number
  readonly grossCents: number
}

export interface InvoiceDraft {
  /** The lines that come to at least 0,01 €; none: nothing is owed, and no invoice is issued. */
  readonly lines: ReadonlyArray<InvoiceLineDraft>
  /** Lines of active contracts that came to 0,00 € and were left out. */
  readonly zeroLinesLeftOut: number
  /**
   * The invoice's service period (Leistungszeitraum): from its earliest line's first day to its latest line's
   * last (with no lines, the active contracts' days).
   */
  readonly serviceStart: string
  readonly serviceEnd: string
  readonly netCents: number
  readonly vatCents: number
  readonly grossCents: number
}

/** The days of the period the contract is active on, or undefined when none. */
export const activeSpan = (contract: BillableContract, period: Period) => {
  const from = Math.max(dayNumber(contract.startsOn), dayNumber(period.start))
  const to = Math.min(contract.endsOn === null ? Infinity : dayNumber(contract.endsOn), dayNumber(period.end))
  return to < from ? undefined : { start: fromDayNumber(from), end: fromDayNumber(to), days: to - from + 1 }
}

// Code-unit order, not the locale's: the same lines in the same order on every machine.
const compare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0)

/**
 * One customer's invoice for the period: one line per contract active in it
 * that comes to at least 0,01 €, in a stable order (start date, description,
 * contract id); undefined when no contract is active.
 */
export const draftInvoice = (contracts: ReadonlyArray<BillableContract>, period: Period): InvoiceDraft | undefined => {
  const active = contracts
    .flatMap((contract) => {
      const span = activeSpan(contract, period)
      return span === undefined ? [] : [{ contract, span }]
    })
    .sort((a, b) =>
      compare(a.contract.startsOn, b.contract.startsOn) ||
      compare(a.contract.description, b.contract.description) ||
      compare(a.contract.contractId, b.contract.contractId)
    )
  if (active.length === 0) return undefined
  const priced = active.map(({ contract, span }) => ({ contract, span, netCents: proRataNet(contract.monthlyNetCents, span.days, period.days) }))
  // A net of 0 has a VAT of 0: the line would say 0,00 €.
  const owed = priced.filter(({ netCents }) => netCents > 0)
  const vatOfLine: Array<number> = []
  for (const rate of new Set(owed.map(({ contract }) => contract.vatRateBp))) {
    const atRate = owed.flatMap(({ contract, netCents }, index) => (contract.vatRateBp === rate ? [{ index, netCents }] : []))
    spreadVat(atRate.map(({ netCents }) => netCents), rate).forEach((vat, k) => (vatOfLine[atRate[k]!.index] = vat))
  }
  const lines = owed.map(({ contract, span, netCents }, index): InvoiceLineDraft => {
    const vatCents = vatOfLine[index]!
    return {
      position: index + 1,
      contractId: contract.contractId,
      description: contract.description,
      serviceStart: span.start,
      serviceEnd: span.end,
      daysBilled: span.days,
      daysInPeriod: period.days,
      monthlyNetCents: contract.monthlyNetCents,
      netCents,
      vatRateBp: contract.vatRateBp,
      vatCents,
      grossCents: netCents + vatCents
    }
  })
  const netCents = lines.reduce((sum, line) => sum + line.netCents, 0)
  const vatCents = lines.reduce((sum, line) => sum + line.vatCents, 0)
  // ISO dates compare as strings.
  const spans = (owed.length > 0 ? owed : priced).map(({ span }) => span)
  const serviceStart = spans.reduce((earliest, span) => (span.start < earliest ? span.start : earliest), spans[0]!.start)
  const serviceEnd = spans.reduce((latest, span) => (span.end > latest ? span.end : latest), spans[0]!.end)
  return { lines, zeroLinesLeftOut: priced.length - owed.length, serviceStart, serviceEnd, netCents, vatCents, grossCents: netCents + vatCents }
}

/** Invoice numbers read <prefix>-<year>-<sequence, 5 digits or more>: RE-2025-00042. */
export const formatInvoiceNumber = (prefix: string, year: number, sequence: number): string =>
  `${prefix}-${year}-${String(sequence).padStart(5, "0")}`
