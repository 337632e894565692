-- 0027's "not blank" trimmed spaces only: an actor or reason of tabs or line breaks, written from psql,
-- passed, while the CLI and Jobs (JavaScript's trim) refuse it. The rule now trims all ASCII whitespace
-- (space, tab, line feed, carriage return, form feed, vertical tab: E'\v' would be the letter v).
-- NOT VALID, as in 0027: entries written before are kept as they are (the table is append-only).
ALTER TABLE audit_logs
  DROP CONSTRAINT audit_logs_actor_not_blank,
  DROP CONSTRAINT audit_logs_reason_not_blank,
  ADD CONSTRAINT audit_logs_actor_not_blank CHECK (btrim(actor, E' \t\n\r\f\x0b') <> '') NOT VALID,
  ADD CONSTRAINT audit_logs_reason_not_blank CHECK (btrim(coalesce(details->>'reason', 'given'), E' \t\n\r\f\x0b') <> '') NOT VALID;
