-- Statements that change jobs chosen by a subquery now find those jobs through
-- the primary key (`id = ANY (ARRAY(subquery))`) instead of joining the
-- subquery. Inside a SQL function a LIMIT is a parameter the planner cannot
-- see, so it expected hundreds of picked rows and joined them by hashing a
-- sequential scan of job_queue: every claim of 5 jobs read the whole table
-- (6 ms at 20,000 rows, growing with the table), and complete_jobs walked the
-- lease index, dead entries of every job claimed since the last vacuum
-- included. An array of ids is always looked up row by row in the key.
-- claim_next_job and complete_jobs, the two statements of every job, also pin their plans to index
-- lookups and are PL/pgSQL, so that a session plans them once instead of on every call.
-- Otherwise the same functions as in 0005, 0008, 0009, 0010 and 0007.

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
-- Plans pinned to index lookups (see the top of this file): no sequential or bitmap scans, whatever
-- the statistics say. Before job_queue's first ANALYZE (a burst of jobs into a new table) the
-- planner sorted the whole backlog on every claim; with job_runs analyzed while still empty, it
-- scanned all of job_runs. Both grow with the table; an index lookup does not.
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
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
      ORDER BY p.priority, p.run_at, p.created_at
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
  ORDER BY c.priority, c.run_at, c.created_at;
END
$$;

CREATE OR REPLACE FUNCTION complete_jobs(
  p_worker_id text,
  p_job_ids   uuid[],
  p_attempts  integer[],
  p_now       timestamptz DEFAULT now()
) RETURNS SETOF uuid LANGUAGE plpgsql
-- Plans pinned to index lookups, as in claim_next_job. Before the first ANALYZE the planner also
-- combined the key lookup with a scan of the whole lease index.
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
AS $$
BEGIN
  RETURN QUERY
  WITH input AS (
    SELECT * FROM unnest(p_job_ids, p_attempts) AS i(id, attempt)
  ), done AS (
    UPDATE job_queue j
    SET status = 'completed', completed_at = p_now, updated_at = p_now, error = NULL,
        locked_by = NULL, locked_at = NULL, lease_expires_at = NULL
    FROM input
    WHERE j.id = ANY (p_job_ids) AND j.id = input.id
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

CREATE OR REPLACE FUNCTION rescue_expired_jobs(
  p_worker_id text,
  p_now       timestamptz DEFAULT now(),
  p_limit     integer DEFAULT 100
) RETURNS TABLE (id uuid, status text, dead_worker text) LANGUAGE sql AS $$
  WITH expired AS (
    SELECT j.id, j.locked_by AS dead_worker
    FROM job_queue j
    WHERE j.status = 'processing' AND j.lease_expires_at < p_now
    ORDER BY j.lease_expires_at
    LIMIT p_limit
    FOR UPDATE SKIP LOCKED
  ), rescued AS (
    UPDATE job_queue j
    SET status = CASE WHEN j.attempts < j.max_attempts THEN 'pending' ELSE 'failed' END,
        completed_at = CASE WHEN j.attempts < j.max_attempts THEN NULL ELSE p_now END,
        updated_at = p_now,
        error = 'lease expired: worker ' || e.dead_worker || ' stopped renewing it',
        locked_by = NULL, locked_at = NULL, lease_expires_at = NULL
    FROM expired e
    WHERE j.id = ANY (ARRAY(SELECT id FROM expired)) AND j.id = e.id
    RETURNING j.id, j.organization_id, j.job_type, j.status, j.attempts, j.max_attempts, j.trace_id, j.error, e.dead_worker
  ), run AS (
    UPDATE job_runs r
    SET status = CASE WHEN x.status = 'pending' THEN 'rescued' ELSE 'failed' END,
        idempotency_status = CASE WHEN x.status = 'pending' THEN r.idempotency_status ELSE 'failed' END,
        last_error = x.error, updated_at = p_now,
        finished_at = CASE WHEN x.status = 'pending' THEN NULL ELSE p_now END
    FROM rescued x
    WHERE r.job_id = ANY (ARRAY(SELECT id FROM rescued)) AND r.job_id = x.id
  ), audit AS (
    INSERT INTO audit_logs (organization_id, actor, event, job_id, trace_id, details, created_at)
    SELECT x.organization_id, p_worker_id, 'job_rescued', x.id, x.trace_id,
           jsonb_build_object('jobType', x.job_type, 'attempt', x.attempts, 'maxAttempts', x.max_attempts,
                              'deadWorker', x.dead_worker, 'newStatus', x.status),
           p_now
    FROM rescued x
  )
  SELECT x.id, x.status, x.dead_worker FROM rescued x
$$;

CREATE OR REPLACE FUNCTION worker_heartbeat(
  p_worker_id text,
  p_job_ids   uuid[],
  p_now       timestamptz DEFAULT now(),
  p_lease     interval DEFAULT interval '30 seconds'
) RETURNS SETOF uuid LANGUAGE sql AS $$
  WITH lockable AS (
    SELECT j.id FROM job_queue j
    WHERE j.id = ANY (p_job_ids) AND j.status = 'processing' AND j.locked_by = p_worker_id
    FOR UPDATE SKIP LOCKED
  ), renewed AS (
    UPDATE job_queue j
    SET lease_expires_at = p_now + p_lease
    WHERE j.id = ANY (ARRAY(SELECT id FROM lockable))
    RETURNING j.id
  ), busy AS (
    SELECT j.id FROM job_queue j
    WHERE j.id = ANY (p_job_ids) AND j.status = 'processing' AND j.locked_by = p_worker_id
      AND j.id NOT IN (SELECT id FROM lockable)
  ), held AS (
    SELECT id FROM renewed UNION ALL SELECT id FROM busy
  ), registration AS (
    UPDATE job_workers
    SET last_heartbeat_at = p_now, jobs_in_hand = coalesce((SELECT array_agg(id) FROM held), '{}')
    WHERE worker_id = p_worker_id
  )
  SELECT id FROM held
$$;

CREATE OR REPLACE FUNCTION prune_finished_jobs(p_older_than timestamptz, p_limit integer DEFAULT 1000)
RETURNS integer LANGUAGE sql AS $$
  WITH pruned AS (
    DELETE FROM job_queue j
    WHERE j.id = ANY (ARRAY(
      SELECT f.id FROM job_queue f
      WHERE f.status IN ('completed', 'failed') AND f.completed_at < p_older_than
      ORDER BY f.completed_at
      LIMIT p_limit
      FOR UPDATE SKIP LOCKED
    ))
    RETURNING 1
  )
  SELECT count(*)::integer FROM pruned
$$;

-- complete_and_claim: complete_jobs, then claim_next_job, in one transaction
-- and one round trip. A busy worker records the jobs that just finished and
-- takes their successors in the same statement: one commit instead of two, and
-- a freed slot never waits for a second round trip. Every row carries the ids
-- complete_jobs completed (a job missing there was no longer held by this
-- worker); when nothing was claimed, one row with only those ids.
CREATE FUNCTION complete_and_claim(
  p_worker_id text,
  p_job_ids   uuid[],
  p_attempts  integer[],
  p_job_types text[],
  p_limit     integer,
  p_now       timestamptz DEFAULT now(),
  p_lease     interval DEFAULT interval '30 seconds'
) RETURNS TABLE (
  completed_ids uuid[],
  id uuid, organization_id uuid, job_type text, payload jsonb, priority smallint,
  attempts integer, max_attempts integer, run_at timestamptz, idempotency_key text,
  trace_id text, parent_span_id text, created_by uuid, created_at timestamptz,
  run_idempotency_status text
) LANGUAGE plpgsql AS $$
DECLARE
  v_completed uuid[];
BEGIN
  SELECT coalesce(array_agg(done), '{}') INTO v_completed
  FROM complete_jobs(p_worker_id, p_job_ids, p_attempts, p_now) AS done;
  RETURN QUERY
  SELECT v_completed, c.*
  FROM (SELECT) AS one
  LEFT JOIN LATERAL claim_next_job(p_worker_id, p_job_types, p_limit, p_now, p_lease) AS c ON true;
END
$$;
