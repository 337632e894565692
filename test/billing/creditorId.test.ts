// A SEPA creditor id (Gläubiger-ID) is checked as the domain does it and as the database does it (billing
// migrations 0014, 0019): its shape (a German one has 18 characters) and its check digits, 02 to 98 and mod 97
// over the national identifier and the country code. Organizations stored before stay, under a check left NOT VALID.
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Schema } from "effect"
import { NewOrganization } from "../../src/billing/domain.js"
import { creditorIdProblem } from "../../src/billing/iban.js"
import { billingDataChecks, billingMigrations } from "../../src/billing/index.js"
import { Migrator } from "../../src/index.js"
import { beforeBillingMigration, billingKit } from "./support.js"

// The Bundesbank's published test id, and an Austrian one whose check digits are 98 - (01234567890AT00 mod 97) = 61.
const VALID = ["DE98ZZZ09999999999", "AT61ZZZ01234567890"]
// DE01…: 01 leaves the same remainder mod 97 as the real 98, but is never issued (0019).
const INVALID = ["DE00ZZZ09999999999", "DE01ZZZ09999999999", "DE12ZZZ09999999999", "DE98ZZZ0999999999912345", "DE98ZZZ0999999999A", "de98zzz09999999999", "DE98"]

const insertOrganization = (id: string, creditorId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql`INSERT INTO organizations (id, name, sepa_creditor_id) VALUES (${id}, 'Gläubiger GmbH', ${creditorId})`)

describe("SEPA creditor ids in the domain", () => {
  it("pass with matching check digits, and a German one only with 18 characters", () => {
    expect(VALID.map(creditorIdProblem)).toEqual([undefined, undefined])
    expect(INVALID.map((id) => creditorIdProblem(id) !== undefined)).toEqual(INVALID.map(() => true))
    expect(creditorIdProblem("DE12ZZZ09999999999")).toBe("the SEPA creditor id's check digits do not match (mod 97)")
    expect(creditorIdProblem("DE01ZZZ09999999999")).toBe("the SEPA creditor id's check digits 01 are not valid: only 02 to 98 are issued")
    const decode = Schema.decodeUnknownEither(NewOrganization)
    const organization = { id: "c0000000-0000-4000-8000-00000000aaaa", name: "Stadtwerke", paymentTermsDays: 14, invoiceNumberPrefix: "SWM" }
    expect(Either.isLeft(decode({ ...organization, sepaCreditorId: "DE00ZZZ09999999999" }))).toBe(true)
    expect(Either.isLeft(decode({ ...organization, sepaCreditorId: "DE01ZZZ09999999999" }))).toBe(true)
    expect(Either.isRight(decode({ ...organization, sepaCreditorId: "DE98ZZZ09999999999" }))).toBe(true)
  })
})

describe("SEPA creditor ids in the database", () => {
  it.layer(billingKit)((it) => {
    it.effect("are checked as the domain checks them", () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const ids = [...VALID, ...INVALID]
        const inDatabase = yield* sql<{ valid: boolean }>`SELECT sepa_creditor_id_is_valid(id) AS valid FROM unnest(${ids}::text[]) WITH ORDINALITY AS t(id, n) ORDER BY n`
        expect(inDatabase.map(({ valid }) => valid)).toEqual(ids.map((id) => creditorIdProblem(id) === undefined))
        const refused = yield* insertOrganization("c0000000-0000-4000-8000-00000000dddd", "DE12ZZZ09999999999").pipe(
          Effect.flip,
          Effect.map((error) => String((error as { cause?: { message?: string } }).cause?.message))
        )
        expect(refused).toContain(`violates check constraint "organizations_sepa_creditor_id_valid"`)
        yield* insertOrganization("c0000000-0000-4000-8000-00000000eeee", "DE98ZZZ09999999999")
        expect((yield* Effect.all(billingDataChecks)).flat()).toEqual([])
      }))
  })
})

describe("Organizations stored before billing migration 0014", () => {
  it.scoped("keep their creditor id, under a check left NOT VALID that the start-up warning names", () =>
    Effect.gen(function* () {
      yield* beforeBillingMigration(14, Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* insertOrganization("c0000000-0000-4000-8000-00000000ffff", "DE00ZZZ09999999999")
        expect(yield* Migrator.migrate([Migrator.coreMigrations, billingMigrations])).toContain("billing/0014_sepa_creditor_id_check_digits")
        expect(yield* sql`SELECT convalidated AS validated FROM pg_constraint WHERE conname = 'organizations_sepa_creditor_id_valid'`).toEqual([{ validated: false }])
        const findings = (yield* Effect.all(billingDataChecks)).flat()
        expect(findings).toHaveLength(1)
        expect(findings[0]).toContain("organizations_sepa_creditor_id_valid is NOT VALID")
      }))
    }), 60_000)
})

describe("Organizations stored before billing migration 0019", () => {
  it.scoped("with check digits 01 keep their creditor id, under the check now left NOT VALID that the start-up warning names", () =>
    Effect.gen(function* () {
      yield* beforeBillingMigration(19, Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        // Passed 0014's check (01 ≡ 98 mod 97).
        yield* insertOrganization("c0000000-0000-4000-8000-00000000abcd", "DE01ZZZ09999999999")
        expect(yield* Migrator.migrate([Migrator.coreMigrations, billingMigrations])).toContain("billing/0019_sepa_creditor_id_check_digits_02_to_98")
        expect(yield* sql`SELECT convalidated AS validated FROM pg_constraint WHERE conname = 'organizations_sepa_creditor_id_valid'`).toEqual([{ validated: false }])
        const findings = (yield* Effect.all(billingDataChecks)).flat()
        expect(findings).toHaveLength(1)
        expect(findings[0]).toContain("organizations_sepa_creditor_id_valid is NOT VALID")
        const refused = yield* insertOrganization("c0000000-0000-4000-8000-00000000abce", "DE01ZZZ09999999999").pipe(Effect.flip)
        expect(String((refused as { cause?: { message?: string } }).cause?.message)).toContain("organizations_sepa_creditor_id_valid")
      }))
    }), 60_000)
})
