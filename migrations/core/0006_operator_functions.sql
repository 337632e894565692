-- Operator actions on single jobs, callable from psql as well as from the CLI
-- (`skiplock jobs fail|retry|cancel`). Like the worker's transitions in 0005,
-- each is one function, so one transaction, that changes job_queue and
-- job_runs and appends its audit entry. Unlike them they raise an error
-- instead of returning nothing, because a person is waiting for the answer:
--   SQLSTATE P0002 (no_data_found)                    no job with that id
--   SQLSTATE 55000 (object_not_in_prerequisite_state) the job's state forbids it
-- p_actor is who did it (a user's UUID or e.g. 'cli:alice'); p_now defaults to now().

-- fail_job_manually: pending|processing -> failed (the runbook's "Job manuell
-- auf failed setzen, Ursache in Audit-Logs dokumentieren"), audit
-- `job_failed_manually` with the reason. A worker still running the job loses
-- it: its lease renewal and completion are guarded by status and owner.
CREATE FUNCTION fail_job_manually(
  p_job_id uuid,
  p_reason text,
  p_actor  text,
  p_now    timestamptz DEFAULT now()
) RETURNS TABLE (id uuid, status text, previous_status text) LANGUAGE plpgsql AS $$
DECLARE
  v_job job_queue%ROWTYPE;
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

-- requeue_failed_job: failed -> pending with fresh attempts (attempts = 0),
-- runnable at once, audit `job_requeued`. A run that already committed stays
-- committed (job_runs.idempotency_status = 'completed'), so the worker skips
-- its handler instead of repeating its effects.
CREATE FUNCTION requeue_failed_job(
  p_job_id uuid,
  p_actor  text,
  p_reason text DEFAULT NULL,
  p_now    timestamptz DEFAULT now()
) RETURNS TABLE (id uuid, status text, previous_status text) LANGUAGE plpgsql AS $$
DECLARE
  v_job job_queue%ROWTYPE;
BEGIN
  SELECT * INTO v_job FROM job_queue j WHERE j.id = p_job_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no job with id %', p_job_id USING ERRCODE = 'no_data_found';
  END IF;
  IF v_job.status <> 'failed' THEN
    RAISE EXCEPTION 'cannot retry job %: it is %', p_job_id, v_job.status
      USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = 'job status: ' || v_job.status,
            HINT = 'only failed jobs can be retried';
  END IF;

  UPDATE job_queue j
  SET status = 'pending', attempts = 0, run_at = p_now, error = NULL, completed_at = NULL, updated_at = p_now,
      locked_by = NULL, locked_at = NULL, lease_expires_at = NULL
  WHERE j.id = p_job_id;

  UPDATE job_runs r
  SET status = 'retry_scheduled', attempts = 0, finished_at = NULL, updated_at = p_now,
      idempotency_status = CASE WHEN r.idempotency_status = 'completed' THEN 'completed' ELSE 'in_progress' END
  WHERE r.job_id = p_job_id;

  INSERT INTO audit_logs (organization_id, actor, event, job_id, trace_id, details, created_at)
  VALUES (v_job.organization_id, p_actor, 'job_requeued', p_job_id, v_job.trace_id,
          jsonb_build_object('jobType', v_job.job_type, 'previousAttempts', v_job.attempts,
                             'maxAttempts', v_job.max_attempts, 'previousError', v_job.error)
            || CASE WHEN p_reason IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('reason', p_reason) END,
          p_now);

  -- Wake idle workers now rather than at their next poll (same channel as enqueue).
  PERFORM pg_notify('skiplock_jobs', v_job.job_type);

  RETURN QUERY SELECT p_job_id, 'pending'::text, v_job.status;
END;
$$;

-- cancel_pending_job: pending -> failed before it runs (again), audit
-- `job_cancelled`. The job's status stays within the four the runbook names;
-- its error says it was cancelled and by whom, and it can be retried later.
CREATE FUNCTION cancel_pending_job(
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
