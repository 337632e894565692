-- A job failed by hand while a worker holds it: the worker learnt of it at its next heartbeat (up to
-- heartbeatInterval, 10 s, later), so its handler ran on meanwhile, and a job it had claimed ahead
-- (prefetch) could even start after the fail (found by a review). fail_job_manually now notifies on the
-- queue's channel with 'let-go:<worker id>', and that worker runs a heartbeat at once. Otherwise as in
-- 0030. The payload cannot be a job type (a colon), so workers of the version before ignore it.
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
  IF v_run_committed THEN
    RAISE EXCEPTION 'cannot fail job % manually: its handler''s transaction has committed', p_job_id
      USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = 'job status: ' || v_job.status || ', run committed',
            HINT = CASE WHEN v_job.status = 'processing' THEN 'the worker is completing it'
                        ELSE 'it completes when a worker next claims it, without running again' END;
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

  -- The worker holding the job hears at once: it stops the handler, or drops the job it claimed ahead
  -- before it starts. (Workers of the version before take the payload for a job type they do not handle.)
  IF v_job.status = 'processing' AND v_job.locked_by IS NOT NULL THEN
    PERFORM pg_notify('skiplock_jobs', 'let-go:' || v_job.locked_by);
  END IF;

  RETURN QUERY SELECT p_job_id, 'failed'::text, v_job.status;
END;
$$;
