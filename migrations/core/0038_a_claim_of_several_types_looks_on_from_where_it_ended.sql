-- A claim of several types goes on from where its last look ended (0037 looked again from the front).
-- When other transactions hold many of the first due jobs (a claim of 0037 locks only the ones it
-- takes, but an operator's long transaction, or many workers' claims at once, can hold thousands),
-- 0037 looked at twice as many candidates each time, each look from the front of every type's part
-- of the runnable index: behind 16,000 rows held elsewhere a claim took 143-212 ms, against 33 ms
-- for the single walk of 0024. Now each look starts at the last candidate of the one before, by its
-- place in the claim's order (priority, run_at, created_at, id) as that look saw it, so each row held
-- elsewhere is read once as a candidate and once by its id: 99-100 ms
-- (bench/probes/claimPastHeldRows.ts, 2026-12-07).
--
-- The candidates carry their place (job_claim_position) instead of only their id. The first look
-- starts at the lowest place there is (the smallest smallint, -infinity twice, the nil uuid), with
-- ">=" so that no job is before it; later looks start at the previous look's last candidate, also
-- with ">=": that one row is looked at twice (it is either ours already, and left out by id, or
-- held elsewhere again), which keeps one statement for every look.
--
-- Otherwise claim_next_job as in 0037.

CREATE TYPE job_claim_position AS (priority smallint, run_at timestamptz, created_at timestamptz, id uuid);

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
-- Plans pinned to index lookups and planned once per session (0013, 0016).
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
  v_types text[] := p_job_types;
  v_ids uuid[] := '{}';
  -- Candidates per look, per type and merged: twice the claim, so that a claim racing another
  -- still finds enough rows that are not locked.
  v_looked bigint := p_limit * 2::bigint;
  v_candidates job_claim_position[];
  -- Where the next look starts: the lowest place there is, then the last candidate looked at.
  -- (Scalars: a composite variable's default would be built on every call, one type's included.)
  v_from_priority smallint := -32768;
  v_from_run_at timestamptz := '-infinity';
  v_from_created_at timestamptz := '-infinity';
  v_from_id uuid := '00000000-0000-0000-0000-000000000000';
  -- The lock step compares the status with this variable, a parameter of its plan rather than a
  -- constant: so the planner cannot walk the runnable index (whose predicate is the constant) in
  -- place of finding the few candidates by id, as it did with no statistics on a new table.
  v_pending constant text := 'pending';
BEGIN
  IF p_limit = 0 THEN
    RETURN;  -- complete_and_claim completing only, with no slot free
  END IF;
  IF cardinality(v_types) = 1 AND array_ndims(v_types) = 1 THEN
    -- One type: its part of the index in the claim's order, as the single walk did over all of it.
    v_ids := ARRAY(
      SELECT p.id
      FROM job_queue p
      WHERE p.job_type = v_types[array_lower(v_types, 1)] AND p.status = 'pending' AND p.run_at <= p_now
      ORDER BY p.priority, p.run_at, p.created_at, p.id
      LIMIT p_limit
      FOR UPDATE SKIP LOCKED);
  ELSE
    IF v_types IS NULL THEN
      v_types := ARRAY(SELECT t.name FROM job_types t);
    END IF;
    -- Several types: the first due jobs of each, merged in the claim's order, then locked.
    LOOP
      v_candidates := ARRAY(
        SELECT ROW(c.priority, c.run_at, c.created_at, c.id)::job_claim_position
        FROM (SELECT DISTINCT u.job_type FROM unnest(v_types) AS u(job_type)) AS t
        CROSS JOIN LATERAL (
          SELECT q.id, q.priority, q.run_at, q.created_at
          FROM job_queue q
          WHERE q.job_type = t.job_type AND q.status = 'pending' AND q.run_at <= p_now
            AND (q.priority, q.run_at, q.created_at, q.id) >= (v_from_priority, v_from_run_at, v_from_created_at, v_from_id)
          ORDER BY q.priority, q.run_at, q.created_at, q.id
          LIMIT v_looked
        ) c
        ORDER BY c.priority, c.run_at, c.created_at, c.id
        LIMIT v_looked);
      -- Each candidate found by its id, in the candidates' order (an array, not a joined row, so
      -- the lock carries only the row it locks); its status, run time and type are looked at again
      -- on the row as it is now (a claim, or an operator's change, that committed meanwhile).
      v_ids := v_ids || ARRAY(
        SELECT p.id
        FROM unnest(v_candidates) WITH ORDINALITY AS k(priority, run_at, created_at, id, ord)
        JOIN job_queue p ON p.id = k.id
        WHERE p.id <> ALL (v_ids) AND p.status = v_pending AND p.run_at <= p_now AND p.job_type = ANY (v_types)
        ORDER BY k.ord
        LIMIT p_limit - cardinality(v_ids)
        FOR UPDATE OF p SKIP LOCKED);
      -- Enough locked, or no more candidates than those looked at; a NULL limit took all at once.
      EXIT WHEN p_limit IS NULL OR cardinality(v_ids) >= p_limit OR cardinality(v_candidates) < v_looked;
      SELECT l.priority, l.run_at, l.created_at, l.id INTO v_from_priority, v_from_run_at, v_from_created_at, v_from_id
      FROM (SELECT (v_candidates[cardinality(v_candidates)]).*) AS l;
      v_looked := v_looked * 2;
    END LOOP;
  END IF;
  RETURN QUERY
  WITH claimed AS (
    UPDATE job_queue j
    SET status = 'processing', attempts = j.attempts + 1, locked_by = p_worker_id,
        locked_at = p_now, lease_expires_at = p_now + p_lease, updated_at = p_now
    WHERE j.id = ANY (v_ids)
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
