-- The tenants of the billing domain. Every billing table carries organization_id,
-- and its foreign keys include it, so no row can point into another organization.
CREATE TABLE organizations (
  id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name                  text NOT NULL CONSTRAINT organizations_name_not_blank CHECK (btrim(name) <> ''),
  -- Zahlungsziel: an invoice is due this many days after its invoice date.
  payment_terms_days    integer NOT NULL DEFAULT 14
                        CONSTRAINT organizations_payment_terms_range CHECK (payment_terms_days BETWEEN 0 AND 180),
  -- Invoice numbers read <prefix>-<year>-<sequence>, e.g. RE-2025-00042.
  invoice_number_prefix text NOT NULL DEFAULT 'RE'
                        CONSTRAINT organizations_invoice_number_prefix_format CHECK (invoice_number_prefix ~ '^[A-Z0-9]{1,10}$'),
  -- Gläubiger-Identifikationsnummer, needed for SEPA direct debits.
  sepa_creditor_id      text CONSTRAINT organizations_sepa_creditor_id_format CHECK (sepa_creditor_id ~ '^[A-Z]{2}[0-9]{2}[A-Z0-9]{3}[A-Z0-9]{1,28}$'),
  created_at            timestamptz NOT NULL DEFAULT now()
);
