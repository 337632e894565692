-- enqueue_and_claim: enqueues jobs and, in the same transaction, claims
-- runnable jobs for a worker of the enqueuing process that has free slots
-- (JobQueue with LocalWorkers). The worker starts them as soon as the
-- statement returns, instead of after a notification and a claim of its own:
-- a round trip and a commit fewer between enqueue and start. The claim is
-- claim_next_job's, in its order: jobs that were waiting before, or are more
-- urgent, go first; the new ones only when they are next.
--
-- Jobs it leaves pending are announced with NOTIFY after the claim; the ones
-- it claimed are not, so that no worker wakes up for them.

CREATE OR REPLACE FUNCTION job_queue_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- Set by enqueue_and_claim for its insert: it announces what stays pending itself.
  IF current_setting('skiplock.defer_notify', true) = 'on' THEN
    RETURN NULL;
  END IF;
  PERFORM pg_notify('skiplock_jobs', t.job_type)
  FROM (SELECT DISTINCT job_type FROM inserted_jobs WHERE status = 'pending') t;
  RETURN NULL;
END;
$$;

CREATE FUNCTION enqueue_and_claim(
  p_jobs           jsonb,
  p_trace_id       text,
  p_parent_span_id text,
  p_now            timestamptz,
  p_worker_id      text,
  p_job_types      text[],
  p_limit          integer,
  p_lease          interval
) RETURNS TABLE (
  -- The jobs inserted (a job whose idempotency key was taken is not): [{id, status, traceId}], on every row.
  enqueued jsonb,
  id uuid, organization_id uuid, job_type text, payload jsonb, priority smallint,
  attempts integer, max_attempts integer, run_at timestamptz, idempotency_key text,
  trace_id text, parent_span_id text, created_by uuid, created_at timestamptz,
  run_idempotency_status text
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_enqueued jsonb;
  v_ids uuid[];
BEGIN
  PERFORM set_config('skiplock.defer_notify', 'on', true);
  WITH inserted AS (
    INSERT INTO job_queue (id, organization_id, job_type, payload, priority, max_attempts, run_at,
                           idempotency_key, trace_id, parent_span_id, created_by, created_at, updated_at)
    SELECT r.id, r.organization_id, r.job_type, r.payload, r.priority, r.max_attempts, r.run_at, r.idempotency_key,
           coalesce(p_trace_id, replace(gen_random_uuid()::text, '-', '')), p_parent_span_id, r.created_by, p_now, p_now
    FROM ROWS FROM (jsonb_to_recordset(p_jobs)
                      AS (id uuid, organization_id uuid, job_type text, payload jsonb, priority smallint,
                          max_attempts integer, run_at timestamptz, idempotency_key text, created_by uuid))
         WITH ORDINALITY AS r(id, organization_id, job_type, payload, priority, max_attempts, run_at, idempotency_key, created_by, ord)
    ORDER BY r.ord
    ON CONFLICT (organization_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING job_queue.id, job_queue.status, job_queue.trace_id
  )
  SELECT coalesce(jsonb_agg(jsonb_build_object('id', i.id, 'status', i.status, 'traceId', i.trace_id)), '[]'::jsonb),
         coalesce(array_agg(i.id), '{}')
  INTO v_enqueued, v_ids
  FROM inserted i;
  PERFORM set_config('skiplock.defer_notify', '', true);

  RETURN QUERY
  SELECT v_enqueued, c.*
  FROM (SELECT) AS one
  LEFT JOIN LATERAL claim_next_job(p_worker_id, p_job_types, p_limit, p_now, p_lease) AS c ON true;

  PERFORM pg_notify('skiplock_jobs', t.job_type)
  FROM (SELECT DISTINCT q.job_type FROM job_queue q WHERE q.id = ANY (v_ids) AND q.status = 'pending') t;
END
$$;
