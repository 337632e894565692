-- complete_jobs: complete_job for many jobs of one worker in one statement.
-- Workers batch the completions that arrive together, so under load a
-- completion costs a fraction of a round trip. Returns the jobs completed;
-- one missing from the result was no longer held by this worker.
CREATE FUNCTION complete_jobs(
  p_worker_id text,
  p_job_ids   uuid[],
  p_attempts  integer[],
  p_now       timestamptz DEFAULT now()
) RETURNS SETOF uuid LANGUAGE sql AS $$
  WITH input AS (
    SELECT * FROM unnest(p_job_ids, p_attempts) AS i(id, attempt)
  ), done AS (
    UPDATE job_queue j
    SET status = 'completed', completed_at = p_now, updated_at = p_now, error = NULL,
        locked_by = NULL, locked_at = NULL, lease_expires_at = NULL
    FROM input
    WHERE j.id = input.id AND j.status = 'processing' AND j.locked_by = p_worker_id AND j.attempts = input.attempt
    RETURNING j.id, j.organization_id, j.job_type, j.attempts, j.trace_id
  ), run AS (
    UPDATE job_runs r
    SET status = 'completed', idempotency_status = 'completed', finished_at = p_now, updated_at = p_now
    FROM done
    WHERE r.job_id = done.id
  ), audit AS (
    INSERT INTO audit_logs (organization_id, actor, event, job_id, trace_id, details, created_at)
    SELECT d.organization_id, p_worker_id, 'job_completed', d.id, d.trace_id,
           jsonb_build_object('jobType', d.job_type, 'attempt', d.attempts), p_now
    FROM done d
  )
  SELECT id FROM done
$$;
