-- The queue itself. A row inserted with only organization_id, job_type, payload
-- and status (the runbook's SQL example) is a complete, runnable job.
CREATE TABLE job_queue (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id  uuid NOT NULL,
  job_type         text NOT NULL REFERENCES job_types (name),
  payload          jsonb NOT NULL DEFAULT '{}'::jsonb,
  status           text NOT NULL DEFAULT 'pending'
                   CONSTRAINT job_queue_status_valid CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
  priority         smallint NOT NULL DEFAULT 0,
  error            text,
  attempts         integer NOT NULL DEFAULT 0 CONSTRAINT job_queue_attempts_not_negative CHECK (attempts >= 0),
  max_attempts     integer NOT NULL DEFAULT 3
                   CONSTRAINT job_queue_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 100),
  run_at           timestamptz NOT NULL DEFAULT now(),
  locked_by        text,
  locked_at        timestamptz,
  lease_expires_at timestamptz,
  idempotency_key  text CONSTRAINT job_queue_idempotency_key_length CHECK (length(idempotency_key) BETWEEN 1 AND 255),
  trace_id         text NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', '')
                   CONSTRAINT job_queue_trace_id_format CHECK (trace_id ~ '^[0-9a-f]{32}$'),
  parent_span_id   text CONSTRAINT job_queue_parent_span_id_format CHECK (parent_span_id ~ '^[0-9a-f]{16}$'),
  created_by       uuid,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  completed_at     timestamptz,
  CONSTRAINT job_queue_processing_is_locked CHECK (status <> 'processing' OR locked_by IS NOT NULL)
);

-- The claim reads only this partial index, so finished history does not slow it down.
CREATE INDEX job_queue_runnable_idx ON job_queue (priority, run_at, created_at) WHERE status = 'pending';
-- Lease expiry scan for the rescuer.
CREATE INDEX job_queue_leases_idx ON job_queue (lease_expires_at) WHERE status = 'processing';
-- Retention prunes finished jobs by age.
CREATE INDEX job_queue_finished_idx ON job_queue (completed_at) WHERE status IN ('completed', 'failed');
-- The runbook's "latest jobs" query and operator listings.
CREATE INDEX job_queue_created_at_idx ON job_queue (created_at DESC);
CREATE INDEX job_queue_organization_idx ON job_queue (organization_id, created_at DESC);
-- An idempotency key is unique per organization: a second enqueue returns the first job.
CREATE UNIQUE INDEX job_queue_idempotency_key_idx ON job_queue (organization_id, idempotency_key)
  WHERE idempotency_key IS NOT NULL;

-- Names the type in the error, instead of the foreign key's generic message.
CREATE FUNCTION job_queue_check_job_type() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM job_types WHERE name = NEW.job_type) THEN
    RAISE EXCEPTION 'unknown job type "%"', NEW.job_type
      USING ERRCODE = 'foreign_key_violation',
            HINT = 'registered job types: ' || (SELECT string_agg(name, ', ' ORDER BY name) FROM job_types);
  END IF;
  RETURN NEW;
END;
$$;

CREATE TRIGGER job_queue_check_job_type
  BEFORE INSERT OR UPDATE OF job_type ON job_queue
  FOR EACH ROW EXECUTE FUNCTION job_queue_check_job_type();

-- Wakes idle workers. One notification per statement and job type; the payload
-- is the job type (never empty: LISTEN clients drop empty payloads).
CREATE FUNCTION job_queue_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('skiplock_jobs', t.job_type)
  FROM (SELECT DISTINCT job_type FROM inserted_jobs WHERE status = 'pending') t;
  RETURN NULL;
END;
$$;

CREATE TRIGGER job_queue_notify_inserted
  AFTER INSERT ON job_queue
  REFERENCING NEW TABLE AS inserted_jobs
  FOR EACH STATEMENT EXECUTE FUNCTION job_queue_notify_inserted();
