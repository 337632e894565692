-- One billing run (Abrechnungslauf) per billing_run job. The run works through
-- the organization's customers in chunks, ordered by customer number; cursor
-- is the last customer number of the last committed chunk, so a retry resumes
-- after it. The counters and totals add up the chunks committed so far.
CREATE TABLE billing_runs (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id     uuid NOT NULL REFERENCES organizations (id),
  -- The job that runs it (job_queue.id); every attempt of that job continues this row.
  job_id              uuid NOT NULL CONSTRAINT billing_runs_job_unique UNIQUE,
  billing_period      text NOT NULL CONSTRAINT billing_runs_period_format CHECK (billing_period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
  invoice_date        date NOT NULL,
  -- NULL: every customer of the organization.
  customer_filter     uuid[],
  status              text NOT NULL DEFAULT 'running'
                      CONSTRAINT billing_runs_status_valid CHECK (status IN ('running', 'completed', 'rolled_back')),
  cursor              text,
  chunks_committed    integer NOT NULL DEFAULT 0,
  customers_processed integer NOT NULL DEFAULT 0,
  invoices_created    integer NOT NULL DEFAULT 0,
  -- Customers that already had an invoice for the period (an earlier run): left alone.
  invoices_skipped    integer NOT NULL DEFAULT 0,
  net_total_cents     bigint NOT NULL DEFAULT 0,
  vat_total_cents     bigint NOT NULL DEFAULT 0,
  gross_total_cents   bigint NOT NULL DEFAULT 0,
  created_by          uuid,
  started_at          timestamptz NOT NULL,
  updated_at          timestamptz NOT NULL,
  finished_at         timestamptz,
  rolled_back_at      timestamptz,
  rolled_back_by      text,
  rollback_reason     text,
  CONSTRAINT billing_runs_gross_is_net_plus_vat CHECK (gross_total_cents = net_total_cents + vat_total_cents),
  CONSTRAINT billing_runs_rollback_recorded CHECK (
    (status = 'rolled_back') = (rolled_back_at IS NOT NULL AND rolled_back_by IS NOT NULL AND rollback_reason IS NOT NULL)),
  CONSTRAINT billing_runs_organization_id_unique UNIQUE (organization_id, id)
);

CREATE INDEX billing_runs_organization_idx ON billing_runs (organization_id, billing_period, started_at DESC);
