/**
 * PostgreSQL takes 'infinity' and '-infinity' as timestamps (an operator parking a job by hand, say), and
 * node-postgres reads them back as the numbers ±Infinity where every reader expects a Date: `skiplock stats`
 * and `jobs list` failed with "getTime is not a function", and /metrics reported the database down. Read as
 * the latest and earliest Date JavaScript has instead (±8.64e15 ms, years ±275760), they sort and compare as
 * the database does.
 */
import pg from "pg"

const TIMESTAMP = 1114
const TIMESTAMPTZ = 1184
const LATEST = 8.64e15

// So are the years PostgreSQL stores but a Date cannot hold (275761 to 294276), which pg reads as an
// Invalid Date (toISOString throws): latest, or earliest for a year BC (none is out of reach yet).
const finite = (parse: (text: string) => unknown) => (text: string) => {
  const value = parse(text)
  if (value instanceof Date && Number.isNaN(value.getTime())) return new Date(text.endsWith(" BC") ? -LATEST : LATEST)
  return value === Infinity ? new Date(LATEST) : value === -Infinity ? new Date(-LATEST) : value
}

const timestamp = finite(pg.types.getTypeParser(TIMESTAMP, "text"))
const timestamptz = finite(pg.types.getTypeParser(TIMESTAMPTZ, "text"))

/** Type parsers for a pool's clients (pg's `types` option): pg's own, but timestamps are always Dates. */
export const typeParsers = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === TIMESTAMPTZ && format !== "binary" ? timestamptz : oid === TIMESTAMP && format !== "binary" ? timestamp : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser
}
