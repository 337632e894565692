/**
 * IBAN checks (ISO 13616): the electronic format and the mod-97 checksum.
 * The database checks the same (iban_is_valid, billing migrations 0002 and 0006), so hand-written rows
 * cannot bypass it; keep the two length tables alike.
 */

const FORMAT = /^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$/

// Lengths of the countries the platform collects from; others only get the generic checks.
const LENGTHS: Readonly<Record<string, number>> = { AT: 20, BE: 16, CH: 21, DE: 22, ES: 24, FR: 27, IT: 27, LU: 20, NL: 18 }

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
  const expected = LENGTHS[iban.slice(0, 2)]
  if (expected !== undefined && iban.length !== expected) return `a ${iban.slice(0, 2)} IBAN has ${expected} characters, not ${iban.length}`
  if (mod97(iban.slice(4) + iban.slice(0, 4)) !== 1) return "the IBAN's check digits do not match (mod 97)"
  return undefined
}

/**
 * An IBAN as error texts may show it: country, check digits and the last four characters
 * ("DE89…3000"). Enough to find the row; the account number stays out of logs, job errors and audit_logs.
 */
export const maskIban = (iban: string): string => (iban.length <= 8 ? "…" : `${iban.slice(0, 4)}…${iban.slice(-4)}`)

export const isValidIban = (iban: string): boolean => ibanProblem(iban) === undefined

/** The IBAN for a country and a national account number (BBAN), with its check digits computed. */
export const makeIban = (country: string, bban: string): string => {
  const check = 98 - mod97(bban + country + "00")
  return `${country}${String(check).padStart(2, "0")}${bban}`
}
