-- The lease index holds the jobs that have a lease (lease_expires_at IS NOT
-- NULL) instead of the jobs whose status is 'processing': the same rows, as
-- every change out of 'processing' clears the lease and only a claim sets
-- one (a heartbeat extends it). With status in its predicate, the planner could use it for any
-- statement that looks a held job up by id and checks status = 'processing'
-- (complete_jobs, complete_job, fail_job_attempt, release_job,
-- worker_heartbeat), and did whenever the statistics were gathered while few
-- jobs were held: such a lookup then read every job in flight, on every
-- worker, to find one. With 3,000 jobs held by another worker, the backend's
-- CPU per complete_and_claim of 5 + 5 jobs: 0.98–1.00 ms with 0016 and this,
-- 1.61–1.64 ms without both (bench/probes/statementCost.ts --held 3000;
-- 0.91–0.95 vs 1.20–1.24 ms with no jobs held elsewhere). The rescuer's scan
-- (lease_expires_at < now) still reads this index; a lookup by id can only use
-- the key. Building it reads job_queue once (122 ms with 1,000,000 finished
-- jobs), blocking writes to job_queue meanwhile.
DROP INDEX job_queue_leases_idx;
CREATE INDEX job_queue_leases_idx ON job_queue (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
