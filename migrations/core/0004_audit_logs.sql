-- Append-only record of every state change. Entries are written in the same
-- transaction as the change they describe.
CREATE TABLE audit_logs (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  organization_id uuid,
  actor           text NOT NULL,
  event           text NOT NULL CONSTRAINT audit_logs_event_format CHECK (event ~ '^[a-z][a-z0-9_]*$'),
  job_id          uuid,
  trace_id        text,
  details         jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_logs_job_idx ON audit_logs (job_id, id) WHERE job_id IS NOT NULL;
CREATE INDEX audit_logs_organization_idx ON audit_logs (organization_id, created_at DESC);
CREATE INDEX audit_logs_event_idx ON audit_logs (event, created_at DESC);

CREATE FUNCTION audit_logs_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_logs is append-only: % is not allowed', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_logs_append_only
  BEFORE UPDATE OR DELETE ON audit_logs
  FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();

CREATE TRIGGER audit_logs_no_truncate
  BEFORE TRUNCATE ON audit_logs
  FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_append_only();
