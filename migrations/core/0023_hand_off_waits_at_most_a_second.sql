-- enqueue_and_claim (0019) inserts jobs and claims them for a worker of the
-- enqueuing process in one statement. Its insert can wait for a lock: the
-- same idempotency key inserted by a transaction still open, or a lock an
-- operator holds. The claim that follows counts its lease from the time the
-- statement was sent (p_now), as the worker does, so after a wait as long as
-- the lease the worker received jobs whose lease had already run out: it
-- dropped them unstarted, and the rescuer counted an attempt for each (on
-- the last attempt, the job failed without ever running). The function now
-- gives up a lock wait after a second (lock_not_available, 55P03); the
-- enqueue then cancels the hand-off and inserts without claiming, which may
-- wait as long as it takes, and the job is claimed as any other.
ALTER FUNCTION enqueue_and_claim(jsonb, text, text, timestamptz, text, text[], integer, interval)
  SET lock_timeout = '1s';
