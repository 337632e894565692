-- A committed run's record no longer keeps the error that came after its COMMIT.
--
-- A transactional handler whose timeout (or stop) arrived while its COMMIT was on its way is
-- completed by fail_job_attempt since 0021: its job has no error, the audit entry says why. Its
-- job_runs row still took the late error as last_error, so `skiplock jobs show` listed a completed
-- run with a timeout as its error. It now keeps the error of the attempts before (none for a first
-- attempt), as rescue_expired_jobs does when it completes a committed run. Only this line differs
-- from 0021's text.
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
        -- A committed run keeps the error of its attempts before, as the rescuer's completion does.
        last_error = CASE WHEN c.status = 'completed' THEN r.last_error ELSE p_error END, updated_at = p_now,
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
