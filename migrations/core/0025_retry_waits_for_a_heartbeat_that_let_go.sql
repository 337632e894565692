-- requeue_failed_job's guard (0022) took a heartbeat after the manual fail for the worker having
-- let go of the job. Two heartbeats were taken so that had not: one that ran while the fail's
-- transaction was still open (the row it had locked counts as held, 0020, so the worker kept its
-- handler running), and one from a worker whose clock is ahead, which stamps a time after the fail
-- although it ran before it. Either way the retry was accepted while the first handler still ran,
-- and another worker ran the same attempt beside it. The worker has let go when its last heartbeat
-- came after the fail and did not report the job among the ones it holds (job_workers.jobs_in_hand).
-- Otherwise the same function as in 0022.
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
    AND coalesce(w.jobs_in_hand_until, w.last_heartbeat_at + interval '30 seconds') >= p_now
$$;
