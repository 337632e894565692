-- A rescued or released job goes back to its place in the queue instead of the
-- end: 0005 set run_at = p_now, which sorted it behind every job waiting, so
-- under a backlog a dead worker's jobs were only retried once the backlog was
-- drained. Its run_at already lies in the past (it was claimed), so keeping it
-- makes the job runnable at once and first in line again.
-- Otherwise the same functions as in 0005.

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
    WHERE j.id = e.id
    RETURNING j.id, j.organization_id, j.job_type, j.status, j.attempts, j.max_attempts, j.trace_id, j.error, e.dead_worker
  ), run AS (
    UPDATE job_runs r
    SET status = CASE WHEN x.status = 'pending' THEN 'rescued' ELSE 'failed' END,
        idempotency_status = CASE WHEN x.status = 'pending' THEN r.idempotency_status ELSE 'failed' END,
        last_error = x.error, updated_at = p_now,
        finished_at = CASE WHEN x.status = 'pending' THEN NULL ELSE p_now END
    FROM rescued x
    WHERE r.job_id = x.id
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

CREATE OR REPLACE FUNCTION release_job(
  p_job_id    uuid,
  p_worker_id text,
  p_attempt   integer,
  p_now       timestamptz DEFAULT now(),
  p_reason    text DEFAULT 'worker shutdown'
) RETURNS boolean LANGUAGE sql AS $$
  WITH released AS (
    UPDATE job_queue
    SET status = 'pending', attempts = attempts - 1, updated_at = p_now,
        locked_by = NULL, locked_at = NULL, lease_expires_at = NULL
    WHERE id = p_job_id AND status = 'processing' AND locked_by = p_worker_id AND attempts = p_attempt
    RETURNING id, organization_id, job_type, attempts, trace_id
  ), run AS (
    UPDATE job_runs r
    SET status = 'released', attempts = rl.attempts, updated_at = p_now
    FROM released rl
    WHERE r.job_id = rl.id
  ), audit AS (
    INSERT INTO audit_logs (organization_id, actor, event, job_id, trace_id, details, created_at)
    SELECT rl.organization_id, p_worker_id, 'job_released', rl.id, rl.trace_id,
           jsonb_build_object('jobType', rl.job_type, 'reason', p_reason), p_now
    FROM released rl
  )
  SELECT EXISTS (SELECT 1 FROM released)
$$;
