-- One row per job: what happened to it, under which idempotency key and trace.
-- It has no foreign key to job_queue because it outlives pruned jobs.
CREATE TABLE job_runs (
  job_id             uuid PRIMARY KEY,
  organization_id    uuid NOT NULL,
  job_type           text NOT NULL,
  idempotency_key    text NOT NULL,
  idempotency_status text NOT NULL
                     CONSTRAINT job_runs_idempotency_status_valid CHECK (idempotency_status IN ('in_progress', 'completed', 'failed')),
  status             text NOT NULL
                     CONSTRAINT job_runs_status_valid CHECK (status IN ('running', 'completed', 'retry_scheduled', 'failed', 'released', 'rescued')),
  attempts           integer NOT NULL,
  last_error         text,
  trace_id           text NOT NULL CONSTRAINT job_runs_trace_id_format CHECK (trace_id ~ '^[0-9a-f]{32}$'),
  worker_id          text,
  progress           jsonb,
  started_at         timestamptz,
  finished_at        timestamptz,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX job_runs_created_at_idx ON job_runs (created_at DESC);
CREATE INDEX job_runs_idempotency_key_idx ON job_runs (organization_id, idempotency_key);
