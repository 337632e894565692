-- A late heartbeat no longer reports a job as held whose row another session has locked after its
-- lease ran out, unless the rescuer would spare the job too. Such a row may be the rescuer's, giving the
-- job back to pending because this worker's heartbeats stopped coming: reported held, the worker went
-- on running its handler, believing its lease renewed, while another worker claimed and ran the job
-- (found by a review; test/reliability/heartbeat.test.ts). A locked row is still reported held while
-- its lease holds (this worker's own completion on its way, an operator's command), and past it while
-- the worker's previous heartbeat still covers it (job_workers.jobs_in_hand_until, which the rescuer
-- goes by: a lock held past the lease costs no job, 0020).
-- And a heartbeat that reaches the database late, after a newer one, undoes nothing. A worker gives up
-- on a heartbeat unanswered for 2 s and tries again, but the statement it gave up on may still be in
-- the network and run later (after an outage heals, TCP delivers it on its own retransmit schedule: a
-- review saw tries run 24 s after the heal, in the wrong order). It set the leases and the worker's
-- registration from its old time: a lease renewed by a newer heartbeat ran out again, and a rescuer
-- took the job while its handler ran. So a heartbeat only ever extends a lease, and updates the
-- worker's row (last heartbeat, jobs in hand) only if it is not older than the last one.
-- Otherwise worker_heartbeat as in 0026.
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
