-- A completion no longer waits for a job row that another transaction has
-- locked (an operator's UPDATE left open, say). complete_jobs skips such a
-- job, and complete_and_claim reports it in busy_ids: still held by the
-- worker, which sends that completion again shortly. Before, the statement
-- waited for the lock, and the claim it carried with it; once both of a
-- worker's statements in flight waited, the worker claimed nothing until the
-- other transaction ended (test/reliability/lockedRows.test.ts).
-- worker_heartbeat has treated locked jobs this way since 0010.
--
-- Only when asked (p_skip_locked, which this version's workers pass): a worker
-- of the version before, still running during a rolling deploy, calls
-- complete_and_claim as before and would take a skipped job for one it no
-- longer holds (its lease would run out and the job run again), so without
-- the flag a completion still waits for the lock.

DROP FUNCTION complete_jobs(text, uuid[], integer[], timestamptz);

CREATE FUNCTION complete_jobs(
  p_worker_id    text,
  p_job_ids      uuid[],
  p_attempts     integer[],
  p_now          timestamptz DEFAULT now(),
  p_skip_locked  boolean DEFAULT false
) RETURNS SETOF uuid LANGUAGE plpgsql
-- As in 0013 and 0016 (a function made anew has none of its predecessor's settings).
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_ids uuid[] := p_job_ids;
BEGIN
  IF p_skip_locked THEN
    -- Locks the rows it can, for the update below (same transaction); skips the rest.
    v_ids := ARRAY(
      SELECT l.id FROM job_queue l
      WHERE l.id = ANY (p_job_ids) AND l.status = 'processing' AND l.locked_by = p_worker_id
      FOR UPDATE SKIP LOCKED);
  END IF;
  RETURN QUERY
  WITH input AS (
    SELECT * FROM unnest(p_job_ids, p_attempts) AS i(id, attempt)
  ), done AS (
    UPDATE job_queue j
    SET status = 'completed', completed_at = p_now, updated_at = p_now, error = NULL,
        locked_by = NULL, locked_at = NULL, lease_expires_at = NULL
    FROM input
    WHERE j.id = ANY (v_ids) AND j.id = input.id
      AND j.status = 'processing' AND j.locked_by = p_worker_id AND j.attempts = input.attempt
    RETURNING j.id, j.organization_id, j.job_type, j.attempts, j.trace_id
  ), run AS (
    UPDATE job_runs r
    SET status = 'completed', idempotency_status = 'completed', finished_at = p_now, updated_at = p_now
    WHERE r.job_id = ANY (ARRAY(SELECT id FROM done))
  ), audit AS (
    INSERT INTO audit_logs (organization_id, actor, event, job_id, trace_id, details, created_at)
    SELECT d.organization_id, p_worker_id, 'job_completed', d.id, d.trace_id,
           jsonb_build_object('jobType', d.job_type, 'attempt', d.attempts), p_now
    FROM done d
  )
  SELECT done.id FROM done;
END
$$;

DROP FUNCTION complete_and_claim(text, uuid[], integer[], text[], integer, timestamptz, interval);

CREATE FUNCTION complete_and_claim(
  p_worker_id text,
  p_job_ids   uuid[],
  p_attempts  integer[],
  p_job_types text[],
  p_limit     integer,
  p_now       timestamptz DEFAULT now(),
  p_lease     interval DEFAULT interval '30 seconds',
  p_skip_locked boolean DEFAULT false
) RETURNS TABLE (
  completed_ids uuid[],
  -- Not completed because another transaction holds the job's row; still held by this worker.
  busy_ids uuid[],
  id uuid, organization_id uuid, job_type text, payload jsonb, priority smallint,
  attempts integer, max_attempts integer, run_at timestamptz, idempotency_key text,
  trace_id text, parent_span_id text, created_by uuid, created_at timestamptz,
  run_idempotency_status text
) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_completed uuid[];
  v_busy uuid[];
BEGIN
  SELECT coalesce(array_agg(done), '{}') INTO v_completed
  FROM complete_jobs(p_worker_id, p_job_ids, p_attempts, p_now, p_skip_locked) AS done;
  IF p_skip_locked AND cardinality(v_completed) < cardinality(p_job_ids) THEN
    SELECT coalesce(array_agg(j.id), '{}') INTO v_busy
    FROM unnest(p_job_ids, p_attempts) AS i(id, attempt)
    JOIN job_queue j ON j.id = i.id
    WHERE NOT (i.id = ANY (v_completed))
      AND j.status = 'processing' AND j.locked_by = p_worker_id AND j.attempts = i.attempt;
  END IF;
  RETURN QUERY
  SELECT v_completed, coalesce(v_busy, '{}'), c.*
  FROM (SELECT) AS one
  LEFT JOIN LATERAL claim_next_job(p_worker_id, p_job_types, p_limit, p_now, p_lease) AS c ON true;
END
$$;
