/**
 * Calendar dates as ISO strings ("2025-03-31") and day numbers (days since
 * 1970-01-01), with no time zone involved: a date is a date. Only "today"
 * needs one, and it is Germany's.
 */

const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})$/
const DAY_MS = 86_400_000

/** Days since 1970-01-01 of an ISO date. */
export const dayNumber = (iso: string): number => {
  const match = ISO_DATE.exec(iso)
  if (match === null) throw new Error(`not an ISO date: ${iso}`)
  return Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])) / DAY_MS
}

/** The ISO date of a day number. */
export const fromDayNumber = (day: number): string => new Date(day * DAY_MS).toISOString().slice(0, 10)

/** True for an ISO date that exists ("2025-02-29" does not). */
export const isCalendarDate = (iso: string): boolean => ISO_DATE.test(iso) && fromDayNumber(dayNumber(iso)) === iso

export const addDays = (iso: string, days: number): string => fromDayNumber(dayNumber(iso) + days)

/** A billing period: one calendar month. */
export interface Period {
  /** "YYYY-MM" */
  readonly period: string
  /** First day, ISO. */
  readonly start: string
  /** Last day, ISO. */
  readonly end: string
  readonly days: number
}

/** The month `months` after a "YYYY-MM" month (before it when negative), as "YYYY-MM". */
export const shiftMonth = (period: string, months: number): string => {
  const index = Number(period.slice(0, 4)) * 12 + Number(period.slice(5, 7)) - 1 + months
  return `${String(Math.floor(index / 12)).padStart(4, "0")}-${String((index % 12) + 1).padStart(2, "0")}`
}

export const PERIOD_FORMAT = /^(2\d{3})-(0[1-9]|1[0-2])$/

/** The month of a "YYYY-MM" string, or undefined when it is not one. */
export const periodOf = (period: string): Period | undefined => {
  const match = PERIOD_FORMAT.exec(period)
  if (match === null) return undefined
  const year = Number(match[1])
  const month = Number(match[2])
  const first = Date.UTC(year, month - 1, 1) / DAY_MS
  const next = Date.UTC(year, month, 1) / DAY_MS
  return { period, start: fromDayNumber(first), end: fromDayNumber(next - 1), days: next - first }
}

const berlin = new Intl.DateTimeFormat("en-CA", { timeZone: "Europe/Berlin", year: "numeric", month: "2-digit", day: "2-digit" })

/** The date in Germany at the given instant (epoch milliseconds), ISO. */
export const germanDate = (epochMillis: number): string => berlin.format(new Date(epochMillis))
