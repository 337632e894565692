-- The heartbeat must not wait for another session's row lock. 0007's UPDATE
-- waited on a running job that an operator's open transaction had locked, so
-- the heartbeat stalled and the leases of the worker's OTHER running jobs ran
-- out: other workers rescued them while their handlers still ran.
-- Now the jobs that can be locked are renewed at once; one locked elsewhere
-- and still held by this worker (as far as the statement's snapshot shows) is
-- reported as held without being renewed this time; the next heartbeat after
-- the lock ends renews it. (While locked, no one can rescue it either: the
-- rescuer skips locked rows.)

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
    FROM lockable l
    WHERE j.id = l.id
    RETURNING j.id
  ), busy AS (
    SELECT j.id FROM job_queue j
    WHERE j.id = ANY (p_job_ids) AND j.status = 'processing' AND j.locked_by = p_worker_id
      AND j.id NOT IN (SELECT id FROM lockable)
  ), held AS (
    SELECT id FROM renewed UNION ALL SELECT id FROM busy
  ), registration AS (
    UPDATE job_workers
    SET last_heartbeat_at = p_now, jobs_in_hand = coalesce((SELECT array_agg(id) FROM held), '{}')
    WHERE worker_id = p_worker_id
  )
  SELECT id FROM held
$$;
