-- A heartbeat that reaches the database late, after a newer one, undoes nothing. A worker gives up on
-- a heartbeat unanswered for 2 s and tries again, but the statement it gave up on may still be in the
-- network and run later (after an outage heals, TCP delivers it on its own retransmit schedule: a
-- review saw tries run 24 s after the heal, in the wrong order). It set the leases and the worker's
-- registration from its old time: a lease renewed by a newer heartbeat ran out again, and a rescuer
-- took the job while its handler ran. Now a heartbeat only ever extends a lease, and updates the
-- worker's row (last heartbeat, jobs in hand) only if it is not older than the last one.
-- And a worker registering again from the same process (host and pid: its first registration
-- committed, but the answer came too late) keeps its start time and the jobs it reported in hand;
-- another process under the same id starts afresh (0029).
-- Tests: test/reliability/heartbeat.test.ts, test/core/maintenance.test.ts.
CREATE OR REPLACE FUNCTION worker_heartbeat(
  p_worker_id text,
  p_job_ids   uuid[],
  p_now       timestamptz DEFAULT now(),
  p_lease     interval DEFAULT interval '30 seconds'
) RETURNS SETOF uuid LANGUAGE sql AS $$
  WITH lockable AS (
    SELECT j.id FROM job_queue j
    WHERE j.id = ANY (p_job_ids) AND j.status = 'processing' AND j.locked_by = p_worker_id
    FOR UPDATE SKIP LOCKED
  ), renewed AS (
    UPDATE job_queue j
    SET lease_expires_at = greatest(j.lease_expires_at, p_now + p_lease)
    WHERE j.id = ANY (ARRAY(SELECT id FROM lockable))
    RETURNING j.id
  ), busy AS (
    SELECT j.id FROM job_queue j
    WHERE j.id = ANY (p_job_ids) AND j.status = 'processing' AND j.locked_by = p_worker_id
      AND (j.lease_expires_at >= p_now
           OR EXISTS (SELECT 1 FROM job_workers w
                      WHERE w.worker_id = p_worker_id AND w.jobs_in_hand_until >= p_now AND j.id = ANY (w.jobs_in_hand)))
      AND j.id NOT IN (SELECT id FROM lockable)
  ), held AS (
    SELECT id FROM renewed UNION ALL SELECT id FROM busy
  ), registration AS (
    UPDATE job_workers
    SET last_heartbeat_at = p_now,
        jobs_in_hand = coalesce(ARRAY(SELECT DISTINCT reported FROM unnest(p_job_ids) AS reported), '{}'),
        jobs_in_hand_until = p_now + p_lease
    WHERE worker_id = p_worker_id AND last_heartbeat_at <= p_now
  )
  SELECT id FROM held
$$;

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
