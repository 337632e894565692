-- A completion no longer waits for a job row that another transaction has
-- locked (an operator's UPDATE left open, say). complete_and_claim locks the
-- rows it can (FOR UPDATE SKIP LOCKED), completes those with complete_jobs
-- (unchanged), and reports the others in busy_ids: still held by the worker,
-- which sends that completion again shortly. Before, the statement waited for
-- the lock, and the claim it carried with it; once both of a worker's
-- statements in flight waited, the worker claimed nothing until the other
-- transaction ended (test/reliability/lockedRows.test.ts).
-- worker_heartbeat has treated locked jobs this way since 0010.
--
-- Only when asked (p_skip_locked, which this version's workers pass): a worker
-- of the version before, still running during a rolling deploy, calls
-- complete_and_claim as before and would take a skipped job for one it no
-- longer holds (its lease would run out and the job run again), so without
-- the flag a completion still waits for the lock.

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
-- Plans pinned to key lookups and made once per session, as complete_jobs' (0013, 0016).
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_ids uuid[] := p_job_ids;
  v_attempts integer[] := p_attempts;
  v_lockable uuid[];
  v_completed uuid[];
  v_busy uuid[] := '{}';
BEGIN
  IF p_skip_locked AND cardinality(p_job_ids) > 0 THEN
    -- Locked here for complete_jobs below (same transaction); rows locked elsewhere are skipped.
    v_lockable := ARRAY(
      SELECT l.id FROM job_queue l
      WHERE l.id = ANY (p_job_ids) AND l.status = 'processing' AND l.locked_by = p_worker_id
      FOR UPDATE SKIP LOCKED);
    SELECT coalesce(array_agg(i.id), '{}'), coalesce(array_agg(i.attempt), '{}') INTO v_ids, v_attempts
    FROM unnest(p_job_ids, p_attempts) AS i(id, attempt)
    WHERE i.id = ANY (v_lockable);
    SELECT coalesce(array_agg(i.id), '{}') INTO v_busy
    FROM unnest(p_job_ids, p_attempts) AS i(id, attempt)
    JOIN job_queue j ON j.id = i.id
    WHERE NOT (i.id = ANY (v_lockable))
      AND j.status = 'processing' AND j.locked_by = p_worker_id AND j.attempts = i.attempt;
  END IF;
  SELECT coalesce(array_agg(done), '{}') INTO v_completed
  FROM complete_jobs(p_worker_id, v_ids, v_attempts, p_now) AS done;
  RETURN QUERY
  SELECT v_completed, v_busy, c.*
  FROM (SELECT) AS one
  LEFT JOIN LATERAL claim_next_job(p_worker_id, p_job_types, p_limit, p_now, p_lease) AS c ON true;
END
$$;
