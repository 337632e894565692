-- A pending job whose handler's transaction has committed can no longer be cancelled or failed by hand.
-- Such a job exists: a stop that came while the handler's COMMIT was on its way releases the job, and
-- its next claim completes it without running it (0021). Cancelled or failed by hand, it ended failed
-- although its effects were in (found by a review; test/core/committedRuns.test.ts). A processing job
-- whose run committed was already refused (0020). Otherwise fail_job_manually as in 0020 and
-- cancel_pending_job as in 0006.
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

  RETURN QUERY SELECT p_job_id, 'failed'::text, v_job.status;
END;
$$;

CREATE OR REPLACE FUNCTION cancel_pending_job(
  p_job_id uuid,
  p_actor  text,
  p_reason text DEFAULT NULL,
  p_now    timestamptz DEFAULT now()
) RETURNS TABLE (id uuid, status text, previous_status text) LANGUAGE plpgsql AS $$
DECLARE
  v_job   job_queue%ROWTYPE;
  v_error text;
BEGIN
  SELECT * INTO v_job FROM job_queue j WHERE j.id = p_job_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no job with id %', p_job_id USING ERRCODE = 'no_data_found';
  END IF;
  IF v_job.status <> 'pending' THEN
    RAISE EXCEPTION 'cannot cancel job %: it is %', p_job_id, v_job.status
      USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = 'job status: ' || v_job.status,
            HINT = 'only pending jobs can be cancelled; use fail for a processing job';
  END IF;
  -- Waits for a run being committed (commit_job_run), then sees it.
  PERFORM 1 FROM job_runs r WHERE r.job_id = p_job_id AND r.idempotency_status = 'completed' FOR UPDATE;
  IF FOUND THEN
    RAISE EXCEPTION 'cannot cancel job %: its handler''s transaction has committed', p_job_id
      USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = 'job status: pending, run committed',
            HINT = 'it completes when a worker next claims it, without running again';
  END IF;
  v_error := 'cancelled by ' || p_actor || coalesce(': ' || p_reason, '');

  UPDATE job_queue j
  SET status = 'failed', error = v_error, completed_at = p_now, updated_at = p_now
  WHERE j.id = p_job_id;

  UPDATE job_runs r
  SET status = 'failed', last_error = v_error, finished_at = p_now, updated_at = p_now,
      idempotency_status = CASE WHEN r.idempotency_status = 'completed' THEN 'completed' ELSE 'failed' END
  WHERE r.job_id = p_job_id;

  INSERT INTO audit_logs (organization_id, actor, event, job_id, trace_id, details, created_at)
  VALUES (v_job.organization_id, p_actor, 'job_cancelled', p_job_id, v_job.trace_id,
          jsonb_build_object('jobType', v_job.job_type, 'attempts', v_job.attempts, 'previousError', v_job.error)
            || CASE WHEN p_reason IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('reason', p_reason) END,
          p_now);

  RETURN QUERY SELECT p_job_id, 'failed'::text, v_job.status;
END;
$$;
