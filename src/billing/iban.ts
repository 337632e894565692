/**
 * IBAN checks (ISO 13616): the electronic format, the country's BBAN format and length as the IBAN
 * registry gives them, check digits 02 to 98, and the mod-97 checksum. Only the SEPA countries' IBANs
 * pass: a SEPA direct debit collects from no other.
 * The database checks the same (iban_is_valid, billing migration 0009, and iban_bban_format, 0009 and 0012), so
 * hand-written rows cannot bypass it; keep the two country tables alike (test/billing/iban.test.ts
 * compares them).
 */

const FORMAT = /^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$/

/**
 * The SEPA area (EPC's list of SEPA scheme countries: the EU, EEA, CH, GB, MC, SM, VA, AD and GI, and
 * since 2024 AL, ME, MD, MK and RS) with their BBAN as the IBAN registry writes it: n digits, a
 * upper-case letters, c either. Territories without a code of their own use their country's (French
 * overseas departments FR, Åland FI, Jersey, Guernsey and the Isle of Man GB). A country the EPC admits
 * later goes here and, in a new billing migration, into iban_bban_format (as 0012 did).
 */
const SEPA_COUNTRIES: Readonly<Record<string, readonly [name: string, bban: string]>> = {
  AD: ["Andorra", "8n12c"],
  AL: ["Albania", "8n16c"],
  AT: ["Austria", "16n"],
  BE: ["Belgium", "12n"],
  BG: ["Bulgaria", "4a6n8c"],
  CH: ["Switzerland", "5n12c"],
  CY: ["Cyprus", "8n16c"],
  CZ: ["Czechia", "20n"],
  DE: ["Germany", "18n"],
  DK: ["Denmark", "14n"],
  EE: ["Estonia", "16n"],
  ES: ["Spain", "20n"],
  FI: ["Finland", "14n"],
  FR: ["France", "10n11c2n"],
  GB: ["the United Kingdom", "4a14n"],
  GI: ["Gibraltar", "4a15c"],
  GR: ["Greece", "7n16c"],
  HR: ["Croatia", "17n"],
  HU: ["Hungary", "24n"],
  IE: ["Ireland", "4a14n"],
  IS: ["Iceland", "22n"],
  IT: ["Italy", "1a10n12c"],
  LI: ["Liechtenstein", "5n12c"],
  LT: ["Lithuania", "16n"],
  LU: ["Luxembourg", "3n13c"],
  LV: ["Latvia", "4a13c"],
  MC: ["Monaco", "10n11c2n"],
  MD: ["Moldova", "2c18c"],
  ME: ["Montenegro", "18n"],
  MK: ["North Macedonia", "3n10c2n"],
  MT: ["Malta", "4a5n18c"],
  NL: ["the Netherlands", "4a10n"],
  NO: ["Norway", "11n"],
  PL: ["Poland", "24n"],
  PT: ["Portugal", "21n"],
  RO: ["Romania", "4a16c"],
  RS: ["Serbia", "18n"],
  SE: ["Sweden", "20n"],
  SI: ["Slovenia", "15n"],
  SK: ["Slovakia", "20n"],
  SM: ["San Marino", "1a10n12c"],
  VA: ["Vatican City", "18n"]
}

const CLASS = { n: "[0-9]", a: "[A-Z]", c: "[A-Z0-9]" } as const
const KIND = { n: "digits", a: "letters", c: "letters or digits" } as const

type Part = { readonly count: number; readonly kind: keyof typeof CLASS }

const partsOf = (bban: string): ReadonlyArray<Part> =>
  [...bban.matchAll(/(\d+)([nac])/g)].map((m) => ({ count: Number(m[1]), kind: m[2] as Part["kind"] }))

/** The SEPA area's country codes, in alphabetical order. */
export const sepaCountries: ReadonlyArray<string> = Object.keys(SEPA_COUNTRIES)

/** The country's BBAN (the IBAN after country code and check digits) as a pattern, or undefined outside SEPA. */
export const bbanPattern = (country: string): RegExp | undefined => {
  const entry = SEPA_COUNTRIES[country]
  return entry === undefined
    ? undefined
    : new RegExp(`^${partsOf(entry[1]).map(({ count, kind }) => `${CLASS[kind]}{${count}}`).join("")}$`)
}

// "a German IBAN has 22 characters, all digits after ...", said as "an IBAN of Germany (DE) has ...".
const formatRule = (country: string): string => {
  const [name, bban] = SEPA_COUNTRIES[country]!
  const parts = partsOf(bban)
  const length = 4 + parts.reduce((sum, part) => sum + part.count, 0)
  const layout = parts.length === 1
    ? `, all ${KIND[parts[0]!.kind]} after the country code and check digits`
    : `: after the country code and check digits, ${parts.map(({ count, kind }) => `${count} ${KIND[kind]}`).join(", then ")}`
  return `an IBAN of ${name} (${country}) has ${length} characters${layout}`
}

// Where the BBAN breaks its country's format (the length is right): "a letter where a digit belongs (character 7)".
const misplaced = (country: string, bban: string): string => {
  let at = 0
  for (const { count, kind } of partsOf(SEPA_COUNTRIES[country]![1])) {
    for (let i = at; i < at + count; i++) {
      if (!new RegExp(CLASS[kind]).test(bban[i]!)) {
        return `${kind === "n" ? "a letter where a digit" : "a digit where a letter"} belongs (character ${i + 5})`
      }
    }
    at += count
  }
  return "a character out of place"
}

/** Removes spaces and upper-cases: "de89 3704 ..." becomes "DE893704...". */
export const normalizeIban = (input: string): string => input.replace(/\s+/g, "").toUpperCase()

// Letters count as 10..35; the number is reduced piecewise so it never leaves the safe integer range.
const mod97 = (digitsAndLetters: string): number => {
  let remainder = 0
  for (const char of digitsAndLetters) {
    const value = char >= "A" && char <= "Z" ? char.charCodeAt(0) - 55 : Number(char)
    remainder = (remainder * (value >= 10 ? 100 : 10) + value) % 97
  }
  return remainder
}

/** Why the IBAN (electronic format, no spaces) is invalid, or undefined when it is valid. */
export const ibanProblem = (iban: string): string | undefined => {
  if (!FORMAT.test(iban)) return "an IBAN is 2 letters, 2 check digits and 11 to 30 letters or digits, without spaces"
  const country = iban.slice(0, 2)
  const pattern = bbanPattern(country)
  if (pattern === undefined) {
    return `${country} is not a country code of the SEPA area: a SEPA direct debit collects only from an IBAN of the SEPA area`
  }
  const bban = iban.slice(4)
  if (!pattern.test(bban)) {
    const expected = 4 + partsOf(SEPA_COUNTRIES[country]![1]).reduce((sum, part) => sum + part.count, 0)
    return `${formatRule(country)}; this one has ${iban.length === expected ? misplaced(country, bban) : iban.length}`
  }
  // ISO 13616 computes them as 98 - (mod 97), so 00, 01 and 99 are never issued, though 01 and 99 can pass mod 97.
  const check = iban.slice(2, 4)
  if (check < "02" || check > "98") return `check digits ${check} are not valid: ISO 13616 allows only 02 to 98`
  if (mod97(bban + iban.slice(0, 4)) !== 1) return "the IBAN's check digits do not match (mod 97)"
  return undefined
}

/**
 * An IBAN as error texts may show it: country, check digits and the last four characters
 * ("DE89…3000"). Enough to find the row; the account number stays out of logs, job errors and audit_logs.
 */
export const maskIban = (iban: string): string => (iban.length <= 8 ? "…" : `${iban.slice(0, 4)}…${iban.slice(-4)}`)

export const isValidIban = (iban: string): boolean => ibanProblem(iban) === undefined

/**
 * Why a SEPA creditor identifier is invalid, or undefined when it is valid: its shape (a German one is
 * DE, two check digits, a business code of three and an 11-digit national identifier), and its check
 * digits, mod 97 over the national identifier and the country code (the business code left out).
 */
export const creditorIdProblem = (id: string): string | undefined => {
  if (!/^[A-Z]{2}[0-9]{2}[A-Z0-9]{3}[A-Z0-9]{1,28}$/.test(id)) return "a SEPA creditor id is a country code, two check digits, a business code of three and the national identifier"
  if (id.startsWith("DE") && !/^DE[0-9]{2}[A-Z0-9]{3}[0-9]{11}$/.test(id)) return "a German SEPA creditor id has 18 characters: DE, two check digits, a business code of three (ZZZ) and 11 digits"
  // ISO 7064 computes them as 98 - (mod 97), so 00, 01 and 99 are never issued, though they can pass mod 97 (billing 0019).
  const check = id.slice(2, 4)
  if (check < "02" || check > "98") return `the SEPA creditor id's check digits ${check} are not valid: only 02 to 98 are issued`
  if (mod97(id.slice(7) + id.slice(0, 4)) !== 1) return "the SEPA creditor id's check digits do not match (mod 97)"
  return undefined
}

/** The IBAN for a country and a national account number (BBAN), with its check digits computed. */
export const makeIban = (country: string, bban: string): string => {
  const check = 98 - mod97(bban + country + "00")
  return `${country}${String(check).padStart(2, "0")}${bban}`
}
