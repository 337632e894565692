-- Two ends of a job that the runbook's audit trail and the run's record did
-- not show as they happened.
--
-- fail_job_attempt respects a run that committed. A transactional handler's
-- SQL commits together with its run's record (commit_job_run, 0020); a
-- timeout (or a stop) that arrives while that COMMIT is on its way takes
-- effect only once it is done, and the worker then reports the attempt as
-- failed. Before, that set the run's idempotency_status from 'completed' to
-- 'failed' on the last attempt (the job failed although its effects were in,
-- and a requeue ran the handler again) and scheduled a pointless retry on the
-- others. Now the job is completed instead, with a job_completed entry that
-- says why, as rescue_expired_jobs does for a committed run since 0020, and
-- the function returns status 'completed'. The job_runs row is locked too
-- (after the job's row, as everywhere), so a commit still on its way is
-- waited for and then seen.
--
-- rescue_expired_jobs writes job_failed for a job whose last attempt ran out
-- with its lease (beside job_rescued), as fail_job_attempt does for a failed
-- last attempt: operators look for job_failed (runbook, "Verifizieren").
--
-- Workers of the version before read status 'completed' as a failure that is
-- not retried (their outcome says failed, the job is completed): a log line
-- wrong, no job lost or run again.

CREATE OR REPLACE FUNCTION fail_job_attempt(
  p_job_id    uuid,
  p_worker_id text,
  p_attempt   integer,
  p_error     text,
  p_retryable boolean,
  p_now       timestamptz DEFAULT now(),
  p_backoff   interval DEFAULT interval '30 seconds'
) RETURNS TABLE (status text, run_at timestamptz) LANGUAGE sql AS $$
  WITH held AS (
    SELECT j.id, j.attempts, j.max_attempts
    FROM job_queue j
    WHERE j.id = p_job_id AND j.status = 'processing' AND j.locked_by = p_worker_id AND j.attempts = p_attempt
    FOR UPDATE
  ), run AS (
    -- Locked after the job's row; waits for a commit_job_run on its way.
    SELECT r.idempotency_status FROM job_runs r WHERE r.job_id = (SELECT id FROM held) FOR UPDATE
  ), decided AS (
    SELECT h.id, coalesce((SELECT run.idempotency_status = 'completed' FROM run), false) AS run_committed,
           (p_retryable AND h.attempts < h.max_attempts) AS will_retry
    FROM held h
  ), changed AS (
    UPDATE job_queue j
    SET status       = CASE WHEN d.run_committed THEN 'completed' WHEN d.will_retry THEN 'pending' ELSE 'failed' END,
        run_at       = CASE WHEN d.will_retry AND NOT d.run_committed THEN p_now + p_backoff * (j.attempts * j.attempts) ELSE j.run_at END,
        completed_at = CASE WHEN d.will_retry AND NOT d.run_committed THEN NULL ELSE p_now END,
        error = CASE WHEN d.run_committed THEN NULL ELSE p_error END,
        updated_at = p_now, locked_by = NULL, locked_at = NULL, lease_expires_at = NULL
    FROM decided d
    WHERE j.id = d.id
    RETURNING j.id, j.organization_id, j.job_type, j.status, j.run_at, j.attempts, j.max_attempts, j.trace_id
  ), run_changed AS (
    UPDATE job_runs r
    SET status = CASE c.status WHEN 'pending' THEN 'retry_scheduled' ELSE c.status END,
        idempotency_status = CASE c.status WHEN 'failed' THEN 'failed' ELSE r.idempotency_status END,
        last_error = p_error, updated_at = p_now,
        finished_at = CASE WHEN c.status = 'pending' THEN NULL ELSE p_now END
    FROM changed c
    WHERE r.job_id = c.id
  ), audit AS (
    INSERT INTO audit_logs (organization_id, actor, event, job_id, trace_id, details, created_at)
    SELECT c.organization_id, p_worker_id,
           CASE c.status WHEN 'pending' THEN 'job_retry_scheduled' WHEN 'completed' THEN 'job_completed' ELSE 'job_failed' END,
           c.id, c.trace_id,
           CASE WHEN c.status = 'completed'
             THEN jsonb_build_object('jobType', c.job_type, 'attempt', c.attempts,
                                     'completedBy', 'the run had committed before the attempt failed: ' || p_error)
             ELSE jsonb_build_object('jobType', c.job_type, 'attempt', c.attempts, 'maxAttempts', c.max_attempts,
                                     'error', p_error, 'retryable', p_retryable)
                  || CASE WHEN c.status = 'pending' THEN jsonb_build_object('runAt', c.run_at) ELSE '{}'::jsonb END
           END,
           p_now
    FROM changed c
  )
  SELECT c.status, c.run_at FROM changed c
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
    UNION ALL
    -- A job whose last attempt ran out with its lease is in the job_failed events like any other.
    SELECT x.organization_id, p_worker_id, 'job_failed', x.id, x.trace_id,
           jsonb_build_object('jobType', x.job_type, 'attempt', x.attempts, 'maxAttempts', x.max_attempts,
                              'error', x.error, 'retryable', true),
           p_now
    FROM rescued x WHERE x.status = 'failed'
  )
  SELECT x.id, x.status, x.dead_worker FROM rescued x
$$;
