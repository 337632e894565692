-- requeue_failed_job refuses, for a few seconds, a job whose handler may
-- still run: one an operator failed by hand (fail_job_manually) while it was
-- processing, whose worker has not renewed its jobs since. Requeued at once,
-- the job could be claimed again by that same worker with the same attempt
-- number (a requeue resets attempts to 0) while the old handler still ran
-- there, and the old run's completion, fenced by worker and attempt, would
-- then complete the new claim. The worker stops such a handler at its next
-- heartbeat (the job is not among the jobs it holds any more); until then
-- (one heartbeat interval, 10 s by default; a worker that cannot reach the
-- database stops it when its lease runs out) the retry is refused with a
-- hint, and `skiplock jobs retry` says why. A job rescued from a stalled
-- worker keeps counting its attempts, so its attempt numbers never repeat,
-- and a worker stops the earlier attempt of a job it claims again.

-- The worker that may still run the handler of a job an operator failed by
-- hand while it was processing: the worker that held it, if it is alive and
-- has not sent a heartbeat since. NULL otherwise.
CREATE FUNCTION job_handler_may_still_run(p_job_id uuid, p_now timestamptz DEFAULT now())
RETURNS text LANGUAGE sql STABLE AS $$
  SELECT w.worker_id
  -- The job's latest change of state (a handler may log entries of its own with the job's id meanwhile).
  FROM (SELECT a.event, a.details, a.created_at FROM audit_logs a
        WHERE a.job_id = p_job_id
          AND a.event IN ('job_started', 'job_completed', 'job_failed', 'job_retry_scheduled', 'job_released',
                          'job_rescued', 'job_failed_manually', 'job_requeued', 'job_cancelled')
        ORDER BY a.id DESC LIMIT 1) AS latest
  JOIN job_workers w ON w.worker_id = latest.details->>'lockedBy'
  WHERE latest.event = 'job_failed_manually' AND latest.details->>'previousStatus' = 'processing'
    AND w.last_heartbeat_at <= latest.created_at
    -- Not known dead: its jobs were still held at its last heartbeat.
    AND coalesce(w.jobs_in_hand_until, w.last_heartbeat_at + interval '30 seconds') >= p_now
$$;

CREATE OR REPLACE FUNCTION requeue_failed_job(
  p_job_id uuid,
  p_actor  text,
  p_reason text DEFAULT NULL,
  p_now    timestamptz DEFAULT now()
) RETURNS TABLE (id uuid, status text, previous_status text) LANGUAGE plpgsql AS $$
DECLARE
  v_job job_queue%ROWTYPE;
  v_worker text;
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
  v_worker := job_handler_may_still_run(p_job_id, p_now);
  IF v_worker IS NOT NULL THEN
    RAISE EXCEPTION 'cannot retry job % yet: its handler may still run on worker %', p_job_id, v_worker
      USING ERRCODE = 'object_not_in_prerequisite_state',
            DETAIL = 'the job was failed by hand while it ran, and the worker has not sent a heartbeat since',
            HINT = 'the worker stops the handler at its next heartbeat (every 10 s by default); retry then';
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
