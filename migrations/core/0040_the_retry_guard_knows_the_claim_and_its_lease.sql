-- Two holes in the retry guard (job_handler_may_still_run, 0022/0025/0032), found by a review
-- (test/core/retryGuard.test.ts), each letting `skiplock jobs retry` requeue a job failed by hand while
-- its handler may still run, so that another worker, or the same one with the same attempt number,
-- could run it beside that handler:
-- - A heartbeat stamped after the fail that did not list the job counted as the worker having let go.
--   With the worker's clock ahead of the operator's (workers may be 20 s apart), a heartbeat sent before
--   the claim is stamped after the fail too, and cannot list a job claimed after it. The fail now
--   records when the job was claimed (lockedAt, by the worker's clock, as its heartbeats are), and only
--   a heartbeat stamped after both the fail and the claim, without the job, has let go.
-- - A worker that had sent no heartbeat since it registered was taken for dead 30 s after it
--   registered: the default lease, fixed in the guard. With a longer lease (and heartbeat interval) it
--   was alive, holding the job's lease. The fail now records the job's lease (leaseExpiresAt), and a
--   worker is not taken for dead before that lease runs out, as no rescuer takes the job before it does.
-- fail_job_manually is otherwise as in 0036; its audit entry has the two new details.
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
                             'previousError', v_job.error, 'lockedBy', v_job.locked_by,
                             'lockedAt', v_job.locked_at, 'leaseExpiresAt', v_job.lease_expires_at),
          p_now);

  -- The worker holding the job hears at once: it stops the handler, or drops the job it claimed ahead
  -- before it starts. (Workers of the version before take the payload for a job type they do not handle.)
  IF v_job.status = 'processing' AND v_job.locked_by IS NOT NULL THEN
    PERFORM pg_notify('skiplock_jobs', 'let-go:' || v_job.locked_by);
  END IF;

  RETURN QUERY SELECT p_job_id, 'failed'::text, v_job.status;
END;
$$;

CREATE OR REPLACE FUNCTION job_handler_may_still_run(p_job_id uuid, p_now timestamptz DEFAULT now())
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
    -- No heartbeat since both the fail and the claim, or one that still reports the job running.
    AND (w.last_heartbeat_at <= greatest(latest.created_at, (latest.details->>'lockedAt')::timestamptz)
         OR p_job_id = ANY (w.jobs_in_hand))
    -- Not known dead: its jobs were still held at its last heartbeat, or the job's lease has not run out.
    AND greatest(coalesce(w.jobs_in_hand_until, w.last_heartbeat_at + interval '30 seconds'),
                 (latest.details->>'leaseExpiresAt')::timestamptz) >= least(p_now, now())
$$;
