-- Jobs of one priority and run time are claimed in the order they were enqueued, also when they
-- share a created_at: the jobs of one enqueueMany (one statement, one timestamp), or of one
-- millisecond. Before, such ties fell to where each row happened to sit in the table, which changes
-- once space is reused: in 3 of 20 rounds of "enqueue 20, claim 5" the first claim took jobs 13 to
-- 17. Job ids are UUIDv7s, in enqueue order within a statement and across statements, so the id
-- breaks the tie; the runnable index carries it, so the claim still reads the index in order.
-- Otherwise claim_next_job as in 0013, with 0016's generic plan.

DROP INDEX job_queue_runnable_idx;
CREATE INDEX job_queue_runnable_idx ON job_queue (priority, run_at, created_at, id) WHERE status = 'pending';

CREATE OR REPLACE FUNCTION claim_next_job(
  p_worker_id text,
  p_job_types text[] DEFAULT NULL,
  p_limit     integer DEFAULT 1,
  p_now       timestamptz DEFAULT now(),
  p_lease     interval DEFAULT interval '30 seconds'
) RETURNS TABLE (
  id uuid, organization_id uuid, job_type text, payload jsonb, priority smallint,
  attempts integer, max_attempts integer, run_at timestamptz, idempotency_key text,
  trace_id text, parent_span_id text, created_by uuid, created_at timestamptz,
  run_idempotency_status text
) LANGUAGE plpgsql
-- Plans pinned to index lookups (see 0013): no sequential or bitmap scans, whatever
-- the statistics say. Before job_queue's first ANALYZE (a burst of jobs into a new table) the
-- planner sorted the whole backlog on every claim; with job_runs analyzed while still empty, it
-- scanned all of job_runs. Both grow with the table; an index lookup does not.
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH claimed AS (
    UPDATE job_queue j
    SET status = 'processing', attempts = j.attempts + 1, locked_by = p_worker_id,
        locked_at = p_now, lease_expires_at = p_now + p_lease, updated_at = p_now
    WHERE j.id = ANY (ARRAY(
      SELECT p.id
      FROM job_queue p
      WHERE p.status = 'pending'
        AND p.run_at <= p_now
        AND (p_job_types IS NULL OR p.job_type = ANY (p_job_types))
      ORDER BY p.priority, p.run_at, p.created_at, p.id
      LIMIT p_limit
      FOR UPDATE SKIP LOCKED
    ))
    RETURNING j.*
  ), runs AS (
    INSERT INTO job_runs AS r (job_id, organization_id, job_type, idempotency_key, idempotency_status,
                               status, attempts, trace_id, worker_id, started_at, created_at, updated_at)
    SELECT c.id, c.organization_id, c.job_type, coalesce(c.idempotency_key, c.id::text), 'in_progress',
           'running', c.attempts, c.trace_id, p_worker_id, p_now, p_now, p_now
    FROM claimed c
    ON CONFLICT (job_id) DO UPDATE
      SET status = 'running', attempts = excluded.attempts, worker_id = excluded.worker_id,
          started_at = excluded.started_at, finished_at = NULL, updated_at = excluded.updated_at,
          -- a run that already committed stays committed: the worker skips it
          idempotency_status = CASE WHEN r.idempotency_status = 'completed' THEN 'completed' ELSE 'in_progress' END
    RETURNING r.job_id, r.idempotency_status
  ), audit AS (
    INSERT INTO audit_logs (organization_id, actor, event, job_id, trace_id, details, created_at)
    SELECT c.organization_id, p_worker_id, 'job_started', c.id, c.trace_id,
           jsonb_build_object('jobType', c.job_type, 'attempt', c.attempts, 'maxAttempts', c.max_attempts), p_now
    FROM claimed c
  )
  SELECT c.id, c.organization_id, c.job_type, c.payload, c.priority, c.attempts, c.max_attempts,
         c.run_at, c.idempotency_key, c.trace_id, c.parent_span_id, c.created_by, c.created_at,
         r.idempotency_status
  FROM claimed c JOIN runs r ON r.job_id = c.id
  ORDER BY c.priority, c.run_at, c.created_at, c.id;
END
$$;
