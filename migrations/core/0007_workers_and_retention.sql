-- Workers register themselves and renew a heartbeat, so operators can see who
-- is running and what each holds; finished jobs are pruned after a retention
-- period (job_runs and audit_logs keep the history).

CREATE TABLE job_workers (
  worker_id         text PRIMARY KEY,
  host              text NOT NULL,
  pid               integer NOT NULL,
  job_types         text[] NOT NULL,
  concurrency       integer NOT NULL,
  jobs_in_hand      uuid[] NOT NULL DEFAULT '{}',
  started_at        timestamptz NOT NULL,
  last_heartbeat_at timestamptz NOT NULL
);

-- register_worker: a worker announces itself when it starts.
CREATE FUNCTION register_worker(
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
        concurrency = excluded.concurrency, last_heartbeat_at = excluded.last_heartbeat_at
$$;

-- worker_heartbeat: renews the leases of the jobs a worker runs and its own
-- registration, in one statement. Returns the jobs it still holds; a job
-- missing from the result was rescued and its handler must stop.
CREATE FUNCTION worker_heartbeat(
  p_worker_id text,
  p_job_ids   uuid[],
  p_now       timestamptz DEFAULT now(),
  p_lease     interval DEFAULT interval '30 seconds'
) RETURNS SETOF uuid LANGUAGE sql AS $$
  WITH held AS (
    UPDATE job_queue
    SET lease_expires_at = p_now + p_lease
    WHERE id = ANY (p_job_ids) AND status = 'processing' AND locked_by = p_worker_id
    RETURNING id
  ), registration AS (
    UPDATE job_workers
    SET last_heartbeat_at = p_now, jobs_in_hand = coalesce((SELECT array_agg(id) FROM held), '{}')
    WHERE worker_id = p_worker_id
  )
  SELECT id FROM held
$$;

-- unregister_worker: a clean stop removes the worker's registration.
CREATE FUNCTION unregister_worker(p_worker_id text) RETURNS void LANGUAGE sql AS $$
  DELETE FROM job_workers WHERE worker_id = p_worker_id
$$;

-- forget_dead_workers: registrations whose heartbeat stopped long ago (the
-- process was killed) are removed; their jobs were rescued long before.
CREATE FUNCTION forget_dead_workers(p_older_than timestamptz) RETURNS integer LANGUAGE sql AS $$
  WITH gone AS (DELETE FROM job_workers WHERE last_heartbeat_at < p_older_than RETURNING 1)
  SELECT count(*)::integer FROM gone
$$;

-- prune_finished_jobs: deletes up to p_limit completed or failed jobs that
-- finished before p_older_than, oldest first. Small batches keep locks short;
-- SKIP LOCKED lets several workers prune side by side.
CREATE FUNCTION prune_finished_jobs(p_older_than timestamptz, p_limit integer DEFAULT 1000)
RETURNS integer LANGUAGE sql AS $$
  WITH doomed AS (
    SELECT id FROM job_queue
    WHERE status IN ('completed', 'failed') AND completed_at < p_older_than
    ORDER BY completed_at
    LIMIT p_limit
    FOR UPDATE SKIP LOCKED
  ), pruned AS (
    DELETE FROM job_queue j USING doomed WHERE j.id = doomed.id RETURNING 1
  )
  SELECT count(*)::integer FROM pruned
$$;
