-- Job ids ordered by time (UUID version 7, RFC 9562) instead of random (v4).
-- An id is the key of job_queue and job_runs and leads audit_logs' job index:
-- random ids put each new entry at a random place in indexes as large as the
-- history kept, so with a large history most inserts touched a page not in
-- memory. Time-ordered ids append at the right edge. JobQueue generates its
-- ids itself (src/internal/uuidv7.ts); this default covers rows inserted by
-- hand, as the runbook shows. Existing ids stay as they are.
CREATE FUNCTION skiplock_uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
  -- a random v4 UUID; its first 48 bits become the milliseconds, its version nibble 4 becomes 7
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid
$$;

ALTER TABLE job_queue ALTER COLUMN id SET DEFAULT skiplock_uuid_v7();
