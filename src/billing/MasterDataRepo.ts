/**
 * The SQL that stores master data: organizations, customers, contracts. Input
 * arrives decoded by the domain Schemas (valid IBANs, dates, amounts).
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"
import type { NewContract, NewCustomer, NewOrganization } from "./domain.js"

export const make = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  return {
    /** Inserts the organization; false when one with its id exists already. */
    insertOrganization: (organization: NewOrganization, now: Date) =>
      sql<{ id: string }>`
        INSERT INTO organizations (id, name, payment_terms_days, invoice_number_prefix, sepa_creditor_id, created_at)
        VALUES (${organization.id}, ${organization.name}, ${organization.paymentTermsDays},
                ${organization.invoiceNumberPrefix}, ${organization.sepaCreditorId ?? null}, ${now})
        ON CONFLICT (id) DO NOTHING
        RETURNING id`.pipe(Effect.map((rows) => rows.length === 1)),

    /** Inserts customers; returns their ids by customer number. */
    insertCustomers: (organizationId: string, customers: ReadonlyArray<NewCustomer>, now: Date) =>
      sql<{ id: string; customerNumber: string }>`
        INSERT INTO customers (organization_id, customer_number, name, email, iban, bic, mandate_reference,
                               mandate_signed_on, created_at)
        SELECT ${organizationId}, v.customer_number, v.name, v.email, v.iban, v.bic, v.mandate_reference,
               v.mandate_signed_on, ${now}
        FROM unnest(${customers.map((c) => c.customerNumber)}::text[], ${customers.map((c) => c.name)}::text[],
                    ${customers.map((c) => c.email ?? null)}::text[], ${customers.map((c) => c.iban)}::text[],
                    ${customers.map((c) => c.bic ?? null)}::text[], ${customers.map((c) => c.mandateReference)}::text[],
                    ${customers.map((c) => c.mandateSignedOn)}::date[])
             AS v(customer_number, name, email, iban, bic, mandate_reference, mandate_signed_on)
        RETURNING id, customer_number AS "customerNumber"`.pipe(
        Effect.map((rows) => new Map(rows.map((row) => [row.customerNumber, row.id])))
      ),

    /** Inserts contracts, each for the customer with its customer number; returns how many were inserted. */
    insertContracts: (organizationId: string, contracts: ReadonlyArray<NewContract>, now: Date) =>
      sql<{ n: number }>`
        WITH inserted AS (
          INSERT INTO contracts (organization_id, customer_id, description, monthly_net_cents, vat_rate_bp,
                                 starts_on, ends_on, created_at)
          SELECT ${organizationId}, c.id, v.description, v.monthly_net_cents, v.vat_rate_bp, v.starts_on, v.ends_on, ${now}
          FROM unnest(${contracts.map((k) => k.customerNumber)}::text[], ${contracts.map((k) => k.description)}::text[],
                      ${contracts.map((k) => k.monthlyNetCents)}::int[], ${contracts.map((k) => k.vatRateBp)}::int[],
                      ${contracts.map((k) => k.startsOn)}::date[], ${contracts.map((k) => k.endsOn ?? null)}::date[])
               AS v(customer_number, description, monthly_net_cents, vat_rate_bp, starts_on, ends_on)
          JOIN customers c ON c.organization_id = ${organizationId} AND c.customer_number = v.customer_number
          RETURNING 1
        )
        SELECT count(*)::int AS n FROM inserted`.pipe(Effect.map((rows) => rows[0]!.n))
  }
})

export type MasterDataRepo = Effect.Effect.Success<typeof make>
