// The database checks IBANs as the domain does (iban_is_valid and
// iban_bban_format, billing migrations 0002, 0006, 0009 and 0012): format, a country
// of the SEPA area with its BBAN format and length, check digits 02 to 98 and
// mod 97, so a customer row written by hand cannot carry an IBAN the domain
// would refuse. And customers stored before 0009 stay, under a constraint
// marked NOT VALID while any of them breaks it.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { SkiplockTest } from "skiplock/testing"
import { bbanPattern, ibanProblem, isValidIban, makeIban, sepaCountries } from "../../src/billing/iban.js"
import { billingMigrations } from "../../src/billing/index.js"
import { Migrator } from "../../src/index.js"
import { beforeBillingMigration, billingKit } from "./support.js"

const ORGANIZATION = "c0000000-0000-4000-8000-00000000aaaa"

// The IBAN registry's examples of every SEPA country, and a second real-format one where we know one.
const REAL_IBANS = [
  "AD1200012030200359100100", "AT611904300234573201", "AT483200000012345864", "BE68539007547034", "BE71096123456769",
  "BG80BNBG96611020345678", "BG18RZBB91550123456789", "CH9300762011623852957", "CH5604835012345678009",
  "CY17002001280000001200527600", "CZ6508000000192000145399", "CZ9455000000001011038930", "DE89370400440532013000",
  "DE02120300000000202051", "DE75512108001245126199", "DK5000400440116243", "EE382200221020145685",
  "ES9121000418450200051332", "ES7921000813610123456789", "FI2112345600000785", "FR1420041010050500013M02606",
  "FR7630006000011234567890189", "GB29NWBK60161331926819", "GB33BUKB20201555555555", "GI75NWBK000000007099453",
  "GR1601101250000000012300695", "HR1210010051863000160", "HU42117730161111101800000000", "IE29AIBK93115212345678",
  "IS140159260076545510730339", "IT60X0542811101000000123456", "LI21088100002324013AA", "LT121000011101001000",
  "LU280019400644750000", "LV80BANK0000435195001", "MC5811222000010123456789030", "MT84MALT011000012345MTLCAST001S",
  "NL91ABNA0417164300", "NL02ABNA0123456789", "NO9386011117947", "PL61109010140000071219812874",
  "PL10105000997603123456789123", "PT50000201231234567890154", "RO49AAAA1B31007593840000", "SE4550000000058398257466",
  "SI56263300012039086", "SK3112000000198742637541", "SM86U0322509800000000270100", "VA59001123000012345678",
  // Admitted since 2024 (billing migration 0012).
  "AL47212110090000000235698741", "MD24AG000225100013104168", "ME25505000012345678951", "MK07250120000058984",
  "RS35260005601001611379"
]

// What the review found accepted, and what the domain now says about each.
const REFUSED: ReadonlyArray<readonly [string, string]> = [
  ["DE99370400440000000024", "check digits 99 are not valid: ISO 13616 allows only 02 to 98"],
  ["DE00370400440000000060", "check digits 00 are not valid: ISO 13616 allows only 02 to 98"],
  ["DE01370400440000000042", "check digits 01 are not valid: ISO 13616 allows only 02 to 98"],
  ["DE92ABCDEFGH0532013000",
    "an IBAN of Germany (DE) has 22 characters, all digits after the country code and check digits; this one has a letter where a digit belongs (character 5)"],
  ["XX0812345678901", "XX is not a country code of the SEPA area: a SEPA direct debit collects only from an IBAN of the SEPA area"],
  ["GB82WEST1234569876543",
    "an IBAN of the United Kingdom (GB) has 22 characters: after the country code and check digits, 4 letters, then 14 digits; this one has 21"],
  [makeIban("PL", "1090101400000712198128"),
    "an IBAN of Poland (PL) has 28 characters, all digits after the country code and check digits; this one has 26"],
  ["TR330006100519786457841326", "TR is not a country code of the SEPA area: a SEPA direct debit collects only from an IBAN of the SEPA area"],
  [makeIban("NL", "ABNA041716430A"),
    "an IBAN of the Netherlands (NL) has 18 characters: after the country code and check digits, 4 letters, then 10 digits; this one has a letter where a digit belongs (character 18)"],
  [makeIban("GB", "NWB160161331926819"),
    "an IBAN of the United Kingdom (GB) has 22 characters: after the country code and check digits, 4 letters, then 14 digits; this one has a digit where a letter belongs (character 8)"]
]

// The class of each character of the country's BBAN: "0-9", "A-Z" or "A-Z0-9".
const bbanClasses = (country: string): ReadonlyArray<string> =>
  [...bbanPattern(country)!.source.matchAll(/\[([^\]]+)\]\{(\d+)\}/g)]
    .flatMap(([, chars, count]) => Array.from({ length: Number(count) }, () => chars!))

// A BBAN of the country's format, its digits and letters drawn from the seed (its last ones vary most).
const sampleBban = (country: string, seed: number): string => {
  const classes = bbanClasses(country)
  return classes.map((chars, i) => {
    const n = Math.floor((seed + 1) * 7919 / 36 ** Math.max(0, classes.length - 1 - i)) % 36 + i
    return chars === "0-9" ? String(n % 10) : chars === "A-Z" ? String.fromCharCode(65 + (n % 26)) : (n % 36).toString(36).toUpperCase()
  }).join("")
}

// A BBAN of the country for which makeIban computes these check digits.
const bbanWithCheckDigits = (country: string, check: string): string => {
  for (let seed = 0; seed < 100_000; seed++) {
    const bban = sampleBban(country, seed)
    if (makeIban(country, bban).slice(2, 4) === check) return bban
  }
  throw new Error(`no BBAN of ${country} found with check digits ${check}`)
}

// Every country's IBANs as they should be, and as they should not: a character more or less, a letter
// where a digit belongs or the other way round (where the BBAN has a place for digits or letters only:
// Moldova's takes either everywhere), and check digits outside 02 to 98.
const generated = sepaCountries.flatMap((country) => {
  const bban = sampleBban(country, country.charCodeAt(0) * 26 + country.charCodeAt(1))
  const valid = makeIban(country, bban)
  const strict = bbanClasses(country).findIndex((chars) => chars !== "A-Z0-9")
  const wrongKind = strict < 0 ? [] : [{
    iban: makeIban(country, bban.slice(0, strict) + (bbanClasses(country)[strict] === "0-9" ? "A" : "1") + bban.slice(strict + 1)),
    valid: false
  }]
  return [
    { iban: valid, valid: true },
    { iban: makeIban(country, bban + "0"), valid: false },
    { iban: makeIban(country, bban.slice(0, -1)), valid: false },
    ...wrongKind,
    // 99 passes mod 97 where 98 - (mod 97) gives 02, 00 where it gives 97, 01 where it gives 98.
    ...([["99", "02"], ["00", "97"], ["01", "98"]] as const).map(([check, computed]) => ({
      iban: country + check + bbanWithCheckDigits(country, computed),
      valid: false
    }))
  ]
})

describe("IBANs in the domain", () => {
  it("accepts a real IBAN of every country of the SEPA area", () => {
    expect(REAL_IBANS.filter((iban) => ibanProblem(iban) !== undefined)).toEqual([])
    expect(new Set(REAL_IBANS.map((iban) => iban.slice(0, 2)))).toEqual(new Set(sepaCountries))
  })

  it("refuses IBANs no bank issues, naming the problem", () => {
    expect(REFUSED.map(([iban]) => [iban, ibanProblem(iban)])).toEqual(REFUSED)
  })

  it("accepts each country's IBANs in its format and refuses them a character longer or shorter, or with a character of the wrong kind", () => {
    expect(generated.filter(({ iban, valid }) => isValidIban(iban) !== valid)).toEqual([])
    // Six refused a country, five for Moldova's (no place in its BBAN is for digits or letters only).
    expect(generated.filter(({ valid }) => !valid).length).toBe(6 * sepaCountries.length - 1)
  })
})

describe("IBANs in the database", () => {
  it.layer(billingKit)((it) => {
    it.effect("iban_bban_format is the domain's table of countries, for every two-letter code", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const codes = Array.from({ length: 26 * 26 }, (_, i) => String.fromCharCode(65 + Math.floor(i / 26), 65 + (i % 26)))
        const inDatabase = yield* sql<{ code: string; format: string | null }>`
          SELECT code, iban_bban_format(code) AS format FROM unnest(${codes}::text[]) WITH ORDINALITY AS t(code, n) ORDER BY n`
        expect(inDatabase).toEqual(codes.map((code) => ({ code, format: bbanPattern(code)?.source ?? null })))
      }))

    it.effect("iban_is_valid agrees with the domain on real, refused and generated IBANs", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const ibans = [...REAL_IBANS, ...REFUSED.map(([iban]) => iban), ...generated.map(({ iban }) => iban)]
        const inDatabase = yield* sql<{ valid: boolean }>`
          SELECT iban_is_valid(iban) AS valid FROM unnest(${ibans}::text[]) WITH ORDINALITY AS t(iban, n) ORDER BY n`
        const disagreeing = ibans.filter((iban, i) => inDatabase[i]!.valid !== isValidIban(iban))
        expect(disagreeing).toEqual([])
        expect(inDatabase.filter(({ valid }) => valid).length).toBe(REAL_IBANS.length + sepaCountries.length)
      }))

    it.effect("the customers' IBAN constraint is validated on a database without customers", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const [constraint] = yield* sql<{ validated: boolean }>`
          SELECT convalidated AS validated FROM pg_constraint WHERE conname = 'customers_iban_valid'`
        expect(constraint).toEqual({ validated: true })
      }))

    it.effect("iban_is_valid agrees with the domain's check, country lengths included, and guards customers", () =>
      Effect.gen(function* () {
        yield* SkiplockTest.reset
        const sql = yield* SqlClient.SqlClient
        const germanTooLong = makeIban("DE", "3704004405320130001") // 23 characters, check digits right
        const ibans = [
          "DE89370400440532013000", "GB82WEST12345698765432", "AT611904300234573201", "NL91ABNA0417164300",
          "DE89370400440532013001", "DE8937040044053201300", germanTooLong, makeIban("NL", "ABNA04171643000"),
          makeIban("AT", "19043002345732011"), "de89370400440532013000", "DE89 3704 0044 0532 0130 00"
        ]
        const inDatabase = yield* sql<{ iban: string; valid: boolean }>`
          SELECT iban, iban_is_valid(iban) AS valid FROM unnest(${ibans}::text[]) AS t(iban)`
        expect(inDatabase.map(({ valid }) => valid)).toEqual(ibans.map(isValidIban))
        expect(inDatabase.filter(({ valid }) => valid).map(({ iban }) => iban)).toEqual(ibans.slice(0, 4))

        yield* sql`INSERT INTO organizations (id, name) VALUES (${ORGANIZATION}, 'IBAN Test GmbH') ON CONFLICT DO NOTHING`
        const refused = yield* sql`
          INSERT INTO customers (organization_id, customer_number, name, iban, mandate_reference, mandate_signed_on)
          VALUES (${ORGANIZATION}, 'K-1', 'Erika Mustermann', ${germanTooLong}, 'M-1', '2025-01-01')`.pipe(
          Effect.flip,
          Effect.map((error) => String((error as { cause?: { message?: string } }).cause?.message))
        )
        expect(refused).toContain(`violates check constraint "customers_iban_valid"`)
      }))
  })
})

describe("Customers stored before migration 0009", () => {
  it.scoped("keep their IBAN, under a constraint left NOT VALID that checks every new or updated row", () =>
    Effect.gen(function* () {
      yield* beforeBillingMigration(9, Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`INSERT INTO organizations (id, name) VALUES (${ORGANIZATION}, 'IBAN Test GmbH')`
        // Check digits 99 passed the checks of 0002 and 0006.
        yield* sql`
          INSERT INTO customers (organization_id, customer_number, name, iban, mandate_reference, mandate_signed_on)
          VALUES (${ORGANIZATION}, 'K-1', 'Erika Mustermann', 'DE99370400440000000024', 'M-1', '2025-01-01'),
                 (${ORGANIZATION}, 'K-2', 'Max Mustermann', 'DE89370400440532013000', 'M-2', '2025-01-01')`

        expect(yield* Migrator.migrate([Migrator.coreMigrations, billingMigrations])).toContain("billing/0009_iban_sepa_countries_and_check_digits")
        const constraintValidated = sql<{ validated: boolean }>`
          SELECT convalidated AS validated FROM pg_constraint WHERE conname = 'customers_iban_valid'`
        expect(yield* constraintValidated).toEqual([{ validated: false }])
        const stored = yield* sql<{ customerNumber: string; valid: boolean }>`
          SELECT customer_number AS "customerNumber", iban_is_valid(iban) AS valid FROM customers ORDER BY customer_number`
        expect(stored).toEqual([{ customerNumber: "K-1", valid: false }, { customerNumber: "K-2", valid: true }])

        const violation = (statement: Effect.Effect<unknown, unknown>) =>
          statement.pipe(Effect.flip, Effect.map((error) => String((error as { cause?: { message?: string } }).cause?.message)))
        const refusal = `violates check constraint "customers_iban_valid"`
        expect(yield* violation(sql`
          INSERT INTO customers (organization_id, customer_number, name, iban, mandate_reference, mandate_signed_on)
          VALUES (${ORGANIZATION}, 'K-3', 'Erika Musterfrau', 'DE99370400440000000024', 'M-3', '2025-01-01')`)).toContain(refusal)
        expect(yield* violation(sql`UPDATE customers SET name = 'Erika Meier' WHERE customer_number = 'K-1'`)).toContain(refusal)

        // Corrected, the row can be updated, and the constraint validated.
        yield* sql`UPDATE customers SET iban = 'DE02120300000000202051', name = 'Erika Meier' WHERE customer_number = 'K-1'`
        yield* sql`ALTER TABLE customers VALIDATE CONSTRAINT customers_iban_valid`
        expect(yield* constraintValidated).toEqual([{ validated: true }])
      }))
    }), 60_000)
})
