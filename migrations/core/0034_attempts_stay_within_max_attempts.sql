-- A pending row whose attempts had reached an integer's maximum (inserted or updated by hand: only
-- attempts >= 0 was checked) made every claim fail as a whole ("integer out of range" from its
-- attempts + 1): no worker could claim any job, and no log line named the row (found by a review;
-- test/reliability/badInput.test.ts). No transition of skiplock's takes attempts past max_attempts: a
-- claim takes a pending job whose attempts are below it, a release or a lost connection takes one back,
-- a retry by hand starts from 0. That is now the rule, and a pending job's attempts stay below its
-- max_attempts, so that its claim keeps to it. Pending rows that break it now can never be claimed as
-- they are: they are failed here, with the reason and their audit entry (a retry by hand starts them again
-- from 0). NOT VALID: finished rows of the past are kept as they are. (Named to be checked after
-- job_queue_max_attempts_range: PostgreSQL checks in name order, and a max_attempts out of range says so first.)
WITH failed AS (
  UPDATE job_queue
  SET status = 'failed', completed_at = now(), updated_at = now(),
      error = format('attempts %s is not below max_attempts %s (set by hand), so the job could never be claimed; '
                     'failed by migration 0034: retry it to start again from 0', attempts, max_attempts)
  WHERE status = 'pending' AND attempts >= max_attempts
  RETURNING id, organization_id, job_type, attempts, max_attempts, trace_id, error
), runs AS (
  UPDATE job_runs r
  SET status = 'failed', last_error = f.error, finished_at = now(), updated_at = now(),
      idempotency_status = CASE WHEN r.idempotency_status = 'completed' THEN 'completed' ELSE 'failed' END
  FROM failed f WHERE r.job_id = f.id
)
INSERT INTO audit_logs (organization_id, actor, event, job_id, trace_id, details, created_at)
SELECT f.organization_id, 'migration 0034', 'job_failed', f.id, f.trace_id,
       jsonb_build_object('jobType', f.job_type, 'attempt', f.attempts, 'maxAttempts', f.max_attempts, 'error', f.error, 'retryable', false),
       now()
FROM failed f;

ALTER TABLE job_queue
  ADD CONSTRAINT job_queue_max_attempts_reach_attempts CHECK (attempts <= max_attempts) NOT VALID,
  ADD CONSTRAINT job_queue_pending_attempts_below_max CHECK (status <> 'pending' OR attempts < max_attempts) NOT VALID;
