-- extend_job_leases (0005) is replaced by worker_heartbeat (0007, 0010), which
-- renews the leases and the worker's registration in one statement; nothing
-- calls it any more.
DROP FUNCTION extend_job_leases(text, uuid[], timestamptz, interval);
