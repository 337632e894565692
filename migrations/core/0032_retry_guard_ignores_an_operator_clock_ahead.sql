-- job_handler_may_still_run took the worker for known dead once the operator's time (p_now, from the
-- machine that runs `skiplock jobs retry`) had passed the worker's jobs_in_hand_until. An operator
-- whose clock runs more than about 30 s ahead of the workers' therefore saw the guard pass at once, and
-- the retry let another worker run the job beside the handler still running (found by reading;
-- test/core/retryGuard.test.ts). "Not known dead" now reads the earlier of the operator's time and the
-- database's, so a clock ahead cannot end a live worker's hold; tests that run the clock in the past
-- (TestClock) still decide by p_now. Otherwise the same function as in 0025.
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
    AND (w.last_heartbeat_at <= latest.created_at OR p_job_id = ANY (w.jobs_in_hand))
    -- Not known dead: its jobs were still held at its last heartbeat.
    AND coalesce(w.jobs_in_hand_until, w.last_heartbeat_at + interval '30 seconds') >= least(p_now, now())
$$;
