-- The same process registering again (its registration ensured again: the answer to the first came
-- too late) is no heartbeat: it reports nothing about the jobs in hand, so it keeps last_heartbeat_at
-- as it keeps jobs_in_hand. Before, it moved last_heartbeat_at on, and job_handler_may_still_run took
-- that for a heartbeat since a fail by hand that no longer reported the job running: requeue_failed_job
-- let the job run again while its handler still ran on that process (found by reading;
-- test/core/retryGuard.test.ts). A first registration, or a new process under the same id (0029), still
-- sets it. The other readers of last_heartbeat_at now count from the process's last heartbeat (or its
-- first registration) as their names say: forget_dead_workers, `skiplock stats` and /metrics (heartbeat
-- age, alive or gone), and the guard's "not known dead" for a worker that has sent no heartbeat yet.
CREATE OR REPLACE FUNCTION register_worker(
  p_worker_id   text,
  p_host        text,
  p_pid         integer,
  p_job_types   text[],
  p_concurrency integer,
  p_now         timestamptz DEFAULT now()
) RETURNS void LANGUAGE sql AS $$
  INSERT INTO job_workers (worker_id, host, pid, job_types, concurrency, started_at, last_heartbeat_at)
  VALUES (p_worker_id, p_host, p_pid, p_job_types, p_concurrency, p_now, p_now)
  ON CONFLICT (worker_id) DO UPDATE
    SET host = excluded.host, pid = excluded.pid, job_types = excluded.job_types,
        concurrency = excluded.concurrency,
        last_heartbeat_at = CASE WHEN (job_workers.host, job_workers.pid) = (excluded.host, excluded.pid)
                                 THEN job_workers.last_heartbeat_at ELSE excluded.last_heartbeat_at END,
        started_at = CASE WHEN (job_workers.host, job_workers.pid) = (excluded.host, excluded.pid)
                          THEN job_workers.started_at ELSE excluded.started_at END,
        jobs_in_hand = CASE WHEN (job_workers.host, job_workers.pid) = (excluded.host, excluded.pid)
                            THEN job_workers.jobs_in_hand ELSE '{}' END,
        jobs_in_hand_until = CASE WHEN (job_workers.host, job_workers.pid) = (excluded.host, excluded.pid)
                                  THEN job_workers.jobs_in_hand_until END
$$;
