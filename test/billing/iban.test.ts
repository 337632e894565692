// The database checks IBANs as the domain does (iban_is_valid, billing
// migrations 0002 and 0006): format, the length of the platform's countries,
// and the mod-97 check digits, so a customer row written by hand cannot carry
// an IBAN the domain would refuse.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { SkiplockTest } from "skiplock/testing"
import { isValidIban, makeIban } from "../../src/billing/iban.js"
import { billingKit } from "./support.js"

const ORGANIZATION = "c0000000-0000-4000-8000-00000000aaaa"

describe("IBANs in the database", () => {
  it.layer(billingKit)((it) => {
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
