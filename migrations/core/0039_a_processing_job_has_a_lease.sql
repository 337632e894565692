-- A row set to 'processing' by hand without a lease (job_queue_processing_is_locked asked only for a
-- locked_by) could never run: no rescue returns it, since a rescue looks for leases that ran out, and it
-- did not show in `skiplock jobs list --status processing`, which reads the lease index (0017), so the
-- listing an operator looks at for stuck jobs hid it (found by a review). Every processing row that
-- skiplock writes has a lease; that is now the rule. Such rows that exist now are failed here, with the
-- reason and their audit entry, as 0034 fails the rows it rules out (a retry by hand starts them again).
-- The constraint is widened in place rather than added beside it: every check costs each statement that
-- writes the table. NOT VALID: the rows were just put right, and validating would read the whole table
-- under this lock.
WITH failed AS (
  UPDATE job_queue
  SET status = 'failed', completed_at = now(), updated_at = now(), locked_by = NULL, locked_at = NULL,
      error = 'processing without a lease (set by hand), so no worker held it and no rescue could return it; '
              'failed by migration 0039: retry it to run it'
  WHERE status = 'processing' AND lease_expires_at IS NULL
  RETURNING id, organization_id, job_type, attempts, max_attempts, trace_id, error
), runs AS (
  UPDATE job_runs r
  SET status = 'failed', last_error = f.error, finished_at = now(), updated_at = now(),
      idempotency_status = CASE WHEN r.idempotency_status = 'completed' THEN 'completed' ELSE 'failed' END
  FROM failed f WHERE r.job_id = f.id
)
INSERT INTO audit_logs (organization_id, actor, event, job_id, trace_id, details, created_at)
SELECT f.organization_id, 'migration 0039', 'job_failed', f.id, f.trace_id,
       jsonb_build_object('jobType', f.job_type, 'attempt', f.attempts, 'maxAttempts', f.max_attempts, 'error', f.error, 'retryable', false),
       now()
FROM failed f;

ALTER TABLE job_queue
  DROP CONSTRAINT job_queue_processing_is_locked,
  ADD CONSTRAINT job_queue_processing_is_locked
    CHECK (status <> 'processing' OR (locked_by IS NOT NULL AND lease_expires_at IS NOT NULL)) NOT VALID;
