-- What a customer is billed for: a net amount per month at one VAT rate, from
-- starts_on to ends_on (both inclusive; no end: until cancelled).
CREATE TABLE contracts (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id   uuid NOT NULL REFERENCES organizations (id),
  customer_id       uuid NOT NULL,
  description       text NOT NULL CONSTRAINT contracts_description_not_blank CHECK (btrim(description) <> ''),
  -- Money is integer cents.
  monthly_net_cents integer NOT NULL CONSTRAINT contracts_monthly_net_positive CHECK (monthly_net_cents > 0),
  -- Basis points: 1900 is 19 %, 700 is 7 %.
  vat_rate_bp       integer NOT NULL CONSTRAINT contracts_vat_rate_range CHECK (vat_rate_bp BETWEEN 0 AND 10000),
  starts_on         date NOT NULL,
  ends_on           date,
  created_at        timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT contracts_ends_after_start CHECK (ends_on IS NULL OR ends_on >= starts_on),
  CONSTRAINT contracts_customer_fk FOREIGN KEY (organization_id, customer_id) REFERENCES customers (organization_id, id),
  CONSTRAINT contracts_organization_id_unique UNIQUE (organization_id, id)
);

CREATE INDEX contracts_customer_idx ON contracts (organization_id, customer_id, starts_on);
