-- release_job gains a time to run again and an error to record. A worker
-- whose attempt failed because its database connection was lost (a restart,
-- pg_terminate_backend, no free connection slot) releases the job instead of
-- counting the attempt: an outage must not use up a job's attempts. It runs
-- again after p_run_at (the worker passes now + its retry backoff), so an
-- outage does not make jobs spin. Shutdown releases pass neither.
DROP FUNCTION release_job(uuid, text, integer, timestamptz, text);

CREATE FUNCTION release_job(
  p_job_id    uuid,
  p_worker_id text,
  p_attempt   integer,
  p_now       timestamptz DEFAULT now(),
  p_reason    text DEFAULT 'worker shutdown',
  p_run_at    timestamptz DEFAULT NULL,
  p_error     text DEFAULT NULL
) RETURNS boolean LANGUAGE sql AS $$
  WITH released AS (
    UPDATE job_queue
    SET status = 'pending', attempts = attempts - 1, updated_at = p_now,
        run_at = coalesce(p_run_at, run_at), error = coalesce(p_error, error),
        locked_by = NULL, locked_at = NULL, lease_expires_at = NULL
    WHERE id = p_job_id AND status = 'processing' AND locked_by = p_worker_id AND attempts = p_attempt
    RETURNING id, organization_id, job_type, attempts, run_at, trace_id
  ), run AS (
    UPDATE job_runs r
    SET status = 'released', attempts = rl.attempts, updated_at = p_now, last_error = coalesce(p_error, r.last_error)
    FROM released rl
    WHERE r.job_id = rl.id
  ), audit AS (
    INSERT INTO audit_logs (organization_id, actor, event, job_id, trace_id, details, created_at)
    SELECT rl.organization_id, p_worker_id, 'job_released', rl.id, rl.trace_id,
           jsonb_build_object('jobType', rl.job_type, 'reason', p_reason)
             || CASE WHEN p_run_at IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('runAt', rl.run_at, 'error', p_error) END,
           p_now
    FROM released rl
  )
  SELECT EXISTS (SELECT 1 FROM released)
$$;
