-- A transactional handler's transaction no longer writes the job's row. It
-- commits the handler's SQL together with the run's record (commit_job_run:
-- job_runs.idempotency_status = 'completed'), and the job's row is completed
-- afterwards like any other job's, with the worker's next statement, which
-- skips a row locked elsewhere (0018). Before, the transaction ended with
-- complete_job, which waited for a row that another transaction held (an
-- operator's UPDATE left open): the handler's slot and its connection stayed
-- taken until that transaction ended, and once every running job of every
-- worker was locked, nothing ran at all (test/reliability/lockedRows.test.ts).
--
-- The run's record is what makes the effect happen once: a run that committed
-- is never run again (claim_next_job has kept a committed run committed since
-- 0005; the worker then completes the job without running the handler).
-- The two functions that end a run against its worker's will now respect one
-- that committed, and commit_job_run respects them; the job_runs row lock
-- serializes the three:
--   rescue_expired_jobs  completes a job whose run committed (instead of
--                        returning it to pending, or failing it when its
--                        attempts are used up), and skips a run being committed;
--   fail_job_manually    refuses a job whose run committed (it is completing);
--   commit_job_run       refuses a run that was rescued, failed, released or
--                        claimed again meanwhile (the transaction rolls back).
--
-- And a job whose row another transaction held past its lease is no longer
-- taken from a worker that is alive and holds it. The heartbeat cannot renew
-- a locked row (0010); it reports the job held, and now records until when
-- the worker holds the jobs it reported (job_workers.jobs_in_hand_until,
-- heartbeat + lease). The rescuer spares those: once the lock ended, it raced
-- the worker's completion (and its next heartbeat), and a job it won was run
-- again, or with a committed run completed by the rescuer, either way with
-- warnings (test/reliability/faults.test.ts, "a transaction idle for longer
-- than the lease"). A worker that stops renewing stops extending
-- jobs_in_hand_until, and its jobs are rescued as before.
--
-- Workers of the version before keep calling complete_job in the handler's
-- transaction, which works as it did, and the heartbeat they call is this one.

ALTER TABLE job_workers ADD COLUMN jobs_in_hand_until timestamptz;

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
    SET last_heartbeat_at = p_now, jobs_in_hand = coalesce((SELECT array_agg(id) FROM held), '{}'),
        jobs_in_hand_until = p_now + p_lease
    WHERE worker_id = p_worker_id
  )
  SELECT id FROM held
$$;

CREATE FUNCTION commit_job_run(
  p_job_id    uuid,
  p_worker_id text,
  p_attempt   integer,
  p_now       timestamptz DEFAULT now()
) RETURNS boolean LANGUAGE sql AS $$
  WITH committed AS (
    UPDATE job_runs r
    SET idempotency_status = 'completed', updated_at = p_now
    WHERE r.job_id = p_job_id AND r.status = 'running' AND r.idempotency_status = 'in_progress'
      AND r.worker_id = p_worker_id AND r.attempts = p_attempt
      -- A plain read, never a wait: the row may be locked by another transaction.
      AND EXISTS (SELECT 1 FROM job_queue j
                  WHERE j.id = p_job_id AND j.status = 'processing' AND j.locked_by = p_worker_id AND j.attempts = p_attempt)
    RETURNING r.job_id
  )
  SELECT EXISTS (SELECT 1 FROM committed)
$$;

CREATE OR REPLACE FUNCTION rescue_expired_jobs(
  p_worker_id text,
  p_now       timestamptz DEFAULT now(),
  p_limit     integer DEFAULT 100
) RETURNS TABLE (id uuid, status text, dead_worker text) LANGUAGE sql AS $$
  WITH expired AS (
    -- The run's row is locked too: a run being committed right now (commit_job_run) is skipped,
    -- and one committed before is seen as committed.
    SELECT j.id, j.locked_by AS dead_worker, r.idempotency_status = 'completed' AS run_committed
    FROM job_queue j
    JOIN job_runs r ON r.job_id = j.id
    WHERE j.status = 'processing' AND j.lease_expires_at < p_now
      -- Held by a worker that is alive and reported it (its row was locked when the heartbeat came).
      AND NOT EXISTS (SELECT 1 FROM job_workers w
                      WHERE w.worker_id = j.locked_by AND w.jobs_in_hand_until >= p_now AND j.id = ANY (w.jobs_in_hand))
    ORDER BY j.lease_expires_at
    LIMIT p_limit
    FOR UPDATE OF j, r SKIP LOCKED
  ), rescued AS (
    UPDATE job_queue j
    SET status = CASE WHEN e.run_committed THEN 'completed' WHEN j.attempts < j.max_attempts THEN 'pending' ELSE 'failed' END,
        completed_at = CASE WHEN e.run_committed OR j.attempts >= j.max_attempts THEN p_now END,
        updated_at = p_now,
        error = CASE WHEN e.run_committed THEN NULL ELSE 'lease expired: worker ' || e.dead_worker || ' stopped renewing it' END,
        locked_by = NULL, locked_at = NULL, lease_expires_at = NULL
    FROM expired e
    WHERE j.id = ANY (ARRAY(SELECT id FROM expired)) AND j.id = e.id
    RETURNING j.id, j.organization_id, j.job_type, j.status, j.attempts, j.max_attempts, j.trace_id, j.error, e.dead_worker
  ), run AS (
    UPDATE job_runs r
    SET status = CASE x.status WHEN 'pending' THEN 'rescued' ELSE x.status END,
        idempotency_status = CASE WHEN x.status = 'failed' THEN 'failed' ELSE r.idempotency_status END,
        last_error = coalesce(x.error, r.last_error), updated_at = p_now,
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
    UNION ALL
    -- A job completed by the rescue is in the runbook's job_completed events like any other.
    SELECT x.organization_id, p_worker_id, 'job_completed', x.id, x.trace_id,
           jsonb_build_object('jobType', x.job_type, 'attempt', x.attempts,
                              'completedBy', 'rescue: the run had committed, worker ' || x.dead_worker || ' stopped renewing its lease'),
           p_now
    FROM rescued x WHERE x.status = 'completed'
  )
  SELECT x.id, x.status, x.dead_worker FROM rescued x
$$;

CREATE OR REPLACE FUNCTION fail_job_manually(
  p_job_id uuid,
  p_reason text,
  p_actor  text,
  p_now    timestamptz DEFAULT now()
) RETURNS TABLE (id uuid, status text, previous_status text) LANGUAGE plpgsql AS $$
DECLARE
  v_job job_queue%ROWTYPE;
  v_run_committed boolean;
BEGIN
  IF p_reason IS NULL OR btrim(p_reason) = '' THEN
    RAISE EXCEPTION 'a reason is required to fail job % manually', p_job_id USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT * INTO v_job FROM job_queue j WHERE j.id = p_job_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no job with id %', p_job_id USING ERRCODE = 'no_data_found';
  END IF;
  IF v_job.status NOT IN ('pending', 'processing') THEN
    RAISE EXCEPTION 'cannot fail job % manually: it is %', p_job_id, v_job.status
      USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = 'job status: ' || v_job.status,
            HINT = 'only pending or processing jobs can be failed';
  END IF;
  -- Waits for a run being committed (commit_job_run), then sees it.
  SELECT r.idempotency_status = 'completed' INTO v_run_committed FROM job_runs r WHERE r.job_id = p_job_id FOR UPDATE;
  IF v_job.status = 'processing' AND v_run_committed THEN
    RAISE EXCEPTION 'cannot fail job % manually: its handler''s transaction has committed', p_job_id
      USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = 'job status: processing, run committed',
            HINT = 'the worker is completing it';
  END IF;

  UPDATE job_queue j
  SET status = 'failed', error = 'failed manually: ' || p_reason, completed_at = p_now, updated_at = p_now,
      locked_by = NULL, locked_at = NULL, lease_expires_at = NULL
  WHERE j.id = p_job_id;

  UPDATE job_runs r
  SET status = 'failed', last_error = 'failed manually: ' || p_reason, finished_at = p_now, updated_at = p_now,
      idempotency_status = CASE WHEN r.idempotency_status = 'completed' THEN 'completed' ELSE 'failed' END
  WHERE r.job_id = p_job_id;

  INSERT INTO audit_logs (organization_id, actor, event, job_id, trace_id, details, created_at)
  VALUES (v_job.organization_id, p_actor, 'job_failed_manually', p_job_id, v_job.trace_id,
          jsonb_build_object('jobType', v_job.job_type, 'reason', p_reason, 'previousStatus', v_job.status,
                             'attempts', v_job.attempts, 'maxAttempts', v_job.max_attempts,
                             'previousError', v_job.error, 'lockedBy', v_job.locked_by),
          p_now);

  RETURN QUERY SELECT p_job_id, 'failed'::text, v_job.status;
END;
$$;
