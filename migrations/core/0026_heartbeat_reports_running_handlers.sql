-- job_workers.jobs_in_hand lists every job the worker reports running, also the ones it no longer
-- holds. Before, a heartbeat recorded only the jobs it still held; a job failed by hand is no longer
-- held the moment the fail commits, so the worker's next heartbeat, which still reported the job
-- because its handler had not stopped yet (the worker interrupts it on that answer, and a handler
-- may take its time to end), already counted as having let go, and requeue_failed_job (0025)
-- accepted the retry while the first handler still ran. Found by a review; test/core/retryGuard.test.ts.
-- The rescuer (0021) looks up jobs_in_hand only for jobs the worker still holds, so it is unchanged.
-- Otherwise worker_heartbeat as in 0020.
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
    SET lease_expires_at = p_now + p_lease
    WHERE j.id = ANY (ARRAY(SELECT id FROM lockable))
    RETURNING j.id
  ), busy AS (
    SELECT j.id FROM job_queue j
    WHERE j.id = ANY (p_job_ids) AND j.status = 'processing' AND j.locked_by = p_worker_id
      AND j.id NOT IN (SELECT id FROM lockable)
  ), held AS (
    SELECT id FROM renewed UNION ALL SELECT id FROM busy
  ), registration AS (
    UPDATE job_workers
    SET last_heartbeat_at = p_now,
        jobs_in_hand = coalesce(ARRAY(SELECT DISTINCT reported FROM unnest(p_job_ids) AS reported), '{}'),
        jobs_in_hand_until = p_now + p_lease
    WHERE worker_id = p_worker_id
  )
  SELECT id FROM held
$$;
