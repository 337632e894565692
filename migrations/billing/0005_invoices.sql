-- Invoice numbers: one counter per organization and year. A billing run takes
-- numbers with UPDATE ... RETURNING in the transaction that inserts the
-- invoices, so the row lock serialises the organization's runs and a rolled
-- back transaction gives its numbers back: the sequence has no gaps.
CREATE TABLE invoice_number_counters (
  organization_id uuid NOT NULL REFERENCES organizations (id),
  year            integer NOT NULL CONSTRAINT invoice_number_counters_year_range CHECK (year BETWEEN 2000 AND 2999),
  last_number     integer NOT NULL CONSTRAINT invoice_number_counters_not_negative CHECK (last_number >= 0),
  PRIMARY KEY (organization_id, year)
);

-- Invoices are never deleted (GoBD): a wrong one is cancelled and its number stays used.
CREATE TABLE invoices (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id     uuid NOT NULL REFERENCES organizations (id),
  billing_run_id      uuid NOT NULL,
  customer_id         uuid NOT NULL,
  billing_period      text NOT NULL CONSTRAINT invoices_period_format CHECK (billing_period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
  invoice_number      text NOT NULL,
  number_year         integer NOT NULL,
  number_sequence     integer NOT NULL CONSTRAINT invoices_number_sequence_positive CHECK (number_sequence > 0),
  invoice_date        date NOT NULL,
  due_date            date NOT NULL,
  -- Leistungszeitraum: the billed calendar month.
  service_start       date NOT NULL,
  service_end         date NOT NULL,
  net_cents           integer NOT NULL CONSTRAINT invoices_net_not_negative CHECK (net_cents >= 0),
  vat_cents           integer NOT NULL CONSTRAINT invoices_vat_not_negative CHECK (vat_cents >= 0),
  gross_cents         integer NOT NULL,
  -- The mandate the amount is collected under, as it was when the invoice was issued.
  iban                text NOT NULL,
  mandate_reference   text NOT NULL,
  status              text NOT NULL DEFAULT 'open'
                      CONSTRAINT invoices_status_valid CHECK (status IN ('open', 'exported', 'paid', 'cancelled')),
  exported_at         timestamptz,
  paid_at             timestamptz,
  cancelled_at        timestamptz,
  cancellation_reason text,
  created_at          timestamptz NOT NULL,
  CONSTRAINT invoices_gross_is_net_plus_vat CHECK (gross_cents = net_cents + vat_cents),
  CONSTRAINT invoices_due_after_invoice_date CHECK (due_date >= invoice_date),
  CONSTRAINT invoices_cancellation_recorded CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL)),
  CONSTRAINT invoices_number_unique UNIQUE (organization_id, invoice_number),
  CONSTRAINT invoices_sequence_unique UNIQUE (organization_id, number_year, number_sequence),
  CONSTRAINT invoices_organization_id_unique UNIQUE (organization_id, id),
  CONSTRAINT invoices_run_fk FOREIGN KEY (organization_id, billing_run_id) REFERENCES billing_runs (organization_id, id),
  CONSTRAINT invoices_customer_fk FOREIGN KEY (organization_id, customer_id) REFERENCES customers (organization_id, id)
);

-- The idempotency guarantee: one live invoice per customer and period, whatever
-- runs, retries or crashes happen. A cancelled invoice frees the slot for a new run.
CREATE UNIQUE INDEX invoices_one_per_customer_and_period ON invoices (organization_id, customer_id, billing_period)
  WHERE status <> 'cancelled';
CREATE INDEX invoices_run_idx ON invoices (billing_run_id, number_sequence);

CREATE FUNCTION billing_never_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'rows of % are never deleted: cancel the invoice instead', TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege',
          HINT = 'see docs/ROLLBACK_PLAYBOOK.md';
END;
$$;

CREATE TRIGGER invoices_never_deleted
  BEFORE DELETE ON invoices
  FOR EACH ROW EXECUTE FUNCTION billing_never_deleted();

-- One line per billed contract, with its service days and its own VAT.
CREATE TABLE invoice_lines (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id   uuid NOT NULL,
  invoice_id        uuid NOT NULL,
  position          integer NOT NULL CONSTRAINT invoice_lines_position_positive CHECK (position > 0),
  contract_id       uuid NOT NULL,
  description       text NOT NULL,
  service_start     date NOT NULL,
  service_end       date NOT NULL,
  days_billed       integer NOT NULL,
  days_in_period    integer NOT NULL,
  monthly_net_cents integer NOT NULL,
  net_cents         integer NOT NULL CONSTRAINT invoice_lines_net_not_negative CHECK (net_cents >= 0),
  vat_rate_bp       integer NOT NULL,
  vat_cents         integer NOT NULL CONSTRAINT invoice_lines_vat_not_negative CHECK (vat_cents >= 0),
  gross_cents       integer NOT NULL,
  CONSTRAINT invoice_lines_gross_is_net_plus_vat CHECK (gross_cents = net_cents + vat_cents),
  CONSTRAINT invoice_lines_days_valid CHECK (days_billed BETWEEN 1 AND days_in_period AND service_end >= service_start),
  CONSTRAINT invoice_lines_position_unique UNIQUE (invoice_id, position),
  CONSTRAINT invoice_lines_invoice_fk FOREIGN KEY (organization_id, invoice_id) REFERENCES invoices (organization_id, id),
  CONSTRAINT invoice_lines_contract_fk FOREIGN KEY (organization_id, contract_id) REFERENCES contracts (organization_id, id)
);

CREATE TRIGGER invoice_lines_never_deleted
  BEFORE DELETE ON invoice_lines
  FOR EACH ROW EXECUTE FUNCTION billing_never_deleted();
