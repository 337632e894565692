-- Job types are data: a job can only be enqueued for a registered type, and a
-- registered type that no worker handles stays visible as waiting work.
CREATE TABLE job_types (
  name        text PRIMARY KEY CONSTRAINT job_types_name_format CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
  description text NOT NULL DEFAULT '',
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- The job types of the runbook's table (WORKER_RUNBOOK, "Registrierte Job-Typen").
INSERT INTO job_types (name, description) VALUES
  ('billing_run',            'Billing run (Abrechnungslauf) for one organization and period'),
  ('sepa_export',            'SEPA direct-debit export'),
  ('settlement_calculation', 'Settlement calculation'),
  ('dunning_run',            'Dunning run (Mahnlauf)'),
  ('report_generation',      'Report generation'),
  ('bulk_invoice_upsert',    'Bulk invoice import');
