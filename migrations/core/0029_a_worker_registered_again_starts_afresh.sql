-- A worker registered again under the same id (a process restarted with a fixed WORKER_ID after a
-- crash) starts afresh: its start time is the new process's, and the jobs the dead process reported
-- in hand are forgotten. Before, `skiplock stats` showed the dead process's start time, and the
-- rescuer spared the dead process's jobs, and requeue_failed_job waited, until that process's last
-- heartbeat ran out (found by a review; test/core/maintenance.test.ts). The new process reports its
-- own jobs with its first heartbeat. The same process registering again (host and pid: its first
-- registration committed, but the answer came too late) keeps its start time and jobs in hand.
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
        concurrency = excluded.concurrency, last_heartbeat_at = excluded.last_heartbeat_at,
        started_at = CASE WHEN (job_workers.host, job_workers.pid) = (excluded.host, excluded.pid)
                          THEN job_workers.started_at ELSE excluded.started_at END,
        jobs_in_hand = CASE WHEN (job_workers.host, job_workers.pid) = (excluded.host, excluded.pid)
                            THEN job_workers.jobs_in_hand ELSE '{}' END,
        jobs_in_hand_until = CASE WHEN (job_workers.host, job_workers.pid) = (excluded.host, excluded.pid)
                                  THEN job_workers.jobs_in_hand_until END
$$;
