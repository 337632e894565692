-- Every state change of a job is one function here: one statement, so one
-- transaction, that updates job_queue, job_runs and appends to audit_logs.
-- Each takes the current time as an argument (default now()) so that the
-- runtime can pass the time of its Clock and tests can drive it.
-- The worker's attempt number is the fencing token: a worker whose job was
-- rescued and claimed again can no longer change it.

-- claim_next_job: pending -> processing, for up to p_limit runnable jobs of the
-- given types (NULL: any type), highest priority (lowest number) first, then
-- earliest run_at, then oldest. Locked rows are skipped, never waited for.
CREATE FUNCTION claim_next_job(
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
) LANGUAGE sql AS $$
  WITH picked AS (
    SELECT j.id
    FROM job_queue j
    WHERE j.status = 'pending'
      AND j.run_at <= p_now
      AND (p_job_types IS NULL OR j.job_type = ANY (p_job_types))
    ORDER BY j.priority, j.run_at, j.created_at
    LIMIT p_limit
    FOR UPDATE SKIP LOCKED
  ), claimed AS (
    UPDATE job_queue j
    SET status = 'processing', attempts = j.attempts + 1, locked_by = p_worker_id,
        locked_at = p_now, lease_expires_at = p_now + p_lease, updated_at = p_now
    FROM picked
    WHERE j.id = picked.id
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
  ORDER BY c.priority, c.run_at, c.created_at
$$;

-- complete_job: processing -> completed. Returns false when the worker no
-- longer holds the job (it was rescued or released meanwhile).
CREATE FUNCTION complete_job(
  p_job_id    uuid,
  p_worker_id text,
  p_attempt   integer,
  p_now       timestamptz DEFAULT now(),
  p_details   jsonb DEFAULT '{}'::jsonb
) RETURNS boolean LANGUAGE sql AS $$
  WITH done AS (
    UPDATE job_queue
    SET status = 'completed', completed_at = p_now, updated_at = p_now, error = NULL,
        locked_by = NULL, locked_at = NULL, lease_expires_at = NULL
    WHERE id = p_job_id AND status = 'processing' AND locked_by = p_worker_id AND attempts = p_attempt
    RETURNING id, organization_id, job_type, attempts, trace_id
  ), run AS (
    UPDATE job_runs r
    SET status = 'completed', idempotency_status = 'completed', finished_at = p_now, updated_at = p_now
    FROM done
    WHERE r.job_id = done.id
  ), audit AS (
    INSERT INTO audit_logs (organization_id, actor, event, job_id, trace_id, details, created_at)
    SELECT d.organization_id, p_worker_id, 'job_completed', d.id, d.trace_id,
           jsonb_build_object('jobType', d.job_type, 'attempt', d.attempts) || p_details, p_now
    FROM done d
  )
  SELECT EXISTS (SELECT 1 FROM done)
$$;

-- fail_job_attempt: processing -> pending (retry at p_now + p_backoff x attempt²)
-- while the error is retryable and attempts are left, else processing -> failed.
-- Returns the job's new status, or NULL when the worker no longer holds it.
CREATE FUNCTION fail_job_attempt(
  p_job_id    uuid,
  p_worker_id text,
  p_attempt   integer,
  p_error     text,
  p_retryable boolean,
  p_now       timestamptz DEFAULT now(),
  p_backoff   interval DEFAULT interval '30 seconds'
) RETURNS TABLE (status text, run_at timestamptz) LANGUAGE sql AS $$
  WITH decided AS (
    SELECT j.id, (p_retryable AND j.attempts < j.max_attempts) AS will_retry
    FROM job_queue j
    WHERE j.id = p_job_id AND j.status = 'processing' AND j.locked_by = p_worker_id AND j.attempts = p_attempt
    FOR UPDATE
  ), changed AS (
    UPDATE job_queue j
    SET status       = CASE WHEN d.will_retry THEN 'pending' ELSE 'failed' END,
        run_at       = CASE WHEN d.will_retry THEN p_now + p_backoff * (j.attempts * j.attempts) ELSE j.run_at END,
        completed_at = CASE WHEN d.will_retry THEN NULL ELSE p_now END,
        error = p_error, updated_at = p_now, locked_by = NULL, locked_at = NULL, lease_expires_at = NULL
    FROM decided d
    WHERE j.id = d.id
    RETURNING j.id, j.organization_id, j.job_type, j.status, j.run_at, j.attempts, j.max_attempts, j.trace_id
  ), run AS (
    UPDATE job_runs r
    SET status = CASE WHEN c.status = 'pending' THEN 'retry_scheduled' ELSE 'failed' END,
        idempotency_status = CASE WHEN c.status = 'pending' THEN r.idempotency_status ELSE 'failed' END,
        last_error = p_error, updated_at = p_now,
        finished_at = CASE WHEN c.status = 'pending' THEN NULL ELSE p_now END
    FROM changed c
    WHERE r.job_id = c.id
  ), audit AS (
    INSERT INTO audit_logs (organization_id, actor, event, job_id, trace_id, details, created_at)
    SELECT c.organization_id, p_worker_id,
           CASE WHEN c.status = 'pending' THEN 'job_retry_scheduled' ELSE 'job_failed' END,
           c.id, c.trace_id,
           jsonb_build_object('jobType', c.job_type, 'attempt', c.attempts, 'maxAttempts', c.max_attempts,
                              'error', p_error, 'retryable', p_retryable)
             || CASE WHEN c.status = 'pending' THEN jsonb_build_object('runAt', c.run_at) ELSE '{}'::jsonb END,
           p_now
    FROM changed c
  )
  SELECT c.status, c.run_at FROM changed c
$$;

-- release_job: processing -> pending without counting the attempt, for jobs a
-- worker stops running on shutdown.
CREATE FUNCTION release_job(
  p_job_id    uuid,
  p_worker_id text,
  p_attempt   integer,
  p_now       timestamptz DEFAULT now(),
  p_reason    text DEFAULT 'worker shutdown'
) RETURNS boolean LANGUAGE sql AS $$
  WITH released AS (
    UPDATE job_queue
    SET status = 'pending', attempts = attempts - 1, run_at = p_now, updated_at = p_now,
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

-- extend_job_leases: a worker's heartbeat. Returns the jobs it still holds; a
-- job missing from the result was rescued and must stop.
CREATE FUNCTION extend_job_leases(
  p_worker_id text,
  p_job_ids   uuid[],
  p_now       timestamptz DEFAULT now(),
  p_lease     interval DEFAULT interval '30 seconds'
) RETURNS SETOF uuid LANGUAGE sql AS $$
  UPDATE job_queue
  SET lease_expires_at = p_now + p_lease
  WHERE id = ANY (p_job_ids) AND status = 'processing' AND locked_by = p_worker_id
  RETURNING id
$$;

-- rescue_expired_jobs: processing jobs whose lease ran out (their worker died or
-- was cut off) go back to pending, the attempt counted, or to failed when no
-- attempts are left.
CREATE FUNCTION rescue_expired_jobs(
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
        run_at = p_now, updated_at = p_now,
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
