-- enqueue_and_claim (0019) inserts jobs and claims them for a worker of the
-- enqueuing process in one statement. Its insert can wait for a lock: the
-- same idempotency key inserted by a transaction still open, or a lock an
-- operator holds. The claim that follows counts its lease from the time the
-- statement was sent (p_now), as the worker does, so after a wait as long as
-- the lease the worker received jobs whose lease had already run out: it
-- dropped them unstarted, and the rescuer counted an attempt for each (on
-- the last attempt, the job failed without ever running).
--
-- This version takes a lock timeout: a lock wait longer than that fails the
-- statement (lock_not_available, 55P03), and the enqueue then inserts without
-- claiming, which may wait as long as it takes. It is a version beside the
-- one of 0019, which stays as it was: workers of the version before still
-- call that one, and must keep waiting as before (their enqueues do not
-- expect the error) during a rolling deploy, or after a rollback of the code.
CREATE FUNCTION enqueue_and_claim(
  p_jobs           jsonb,
  p_trace_id       text,
  p_parent_span_id text,
  p_now            timestamptz,
  p_worker_id      text,
  p_job_types      text[],
  p_limit          integer,
  p_lease          interval,
  p_lock_timeout   interval
) RETURNS TABLE (
  enqueued jsonb,
  id uuid, organization_id uuid, job_type text, payload jsonb, priority smallint,
  attempts integer, max_attempts integer, run_at timestamptz, idempotency_key text,
  trace_id text, parent_span_id text, created_by uuid, created_at timestamptz,
  run_idempotency_status text
) LANGUAGE plpgsql AS $$
BEGIN
  -- Until the end of the statement's transaction (a hand-off never runs inside a caller's transaction).
  PERFORM set_config('lock_timeout', ceil(extract(epoch FROM p_lock_timeout) * 1000)::bigint::text, true);
  RETURN QUERY
  SELECT * FROM enqueue_and_claim(p_jobs, p_trace_id, p_parent_span_id, p_now, p_worker_id, p_job_types, p_limit, p_lease);
END
$$;
