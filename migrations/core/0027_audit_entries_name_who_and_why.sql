-- Every audit entry names who acted, and a reason, where one is given, says something. From psql the
-- operator functions (0006) took an empty or blank actor, and cancel and retry an empty reason, and
-- wrote entries that no one can follow up ("cancelled by : "); the CLI already refused them. One rule
-- on the table covers every writer: the operator functions, the worker and handlers' own entries.
-- NOT VALID: entries written before are kept as they are (the table is append-only).
ALTER TABLE audit_logs
  ADD CONSTRAINT audit_logs_actor_not_blank CHECK (btrim(actor) <> '') NOT VALID,
  ADD CONSTRAINT audit_logs_reason_not_blank CHECK (btrim(coalesce(details->>'reason', 'given')) <> '') NOT VALID;
