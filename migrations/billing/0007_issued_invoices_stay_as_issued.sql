-- An issued invoice stays as it was issued (GoBD): 0005 refused DELETE on invoices and their lines,
-- but TRUNCATE emptied both, and an UPDATE could rewrite an invoice's number, amounts, dates or
-- debtor. Now TRUNCATE is refused as DELETE is, an invoice line is never changed, and of an invoice
-- only what happens to it afterwards may change: its status (open, exported, paid, cancelled) with
-- the time and reason of that, never what it says.
CREATE TRIGGER invoices_never_truncated
  BEFORE TRUNCATE ON invoices
  FOR EACH STATEMENT EXECUTE FUNCTION billing_never_deleted();

CREATE TRIGGER invoice_lines_never_truncated
  BEFORE TRUNCATE ON invoice_lines
  FOR EACH STATEMENT EXECUTE FUNCTION billing_never_deleted();

CREATE FUNCTION billing_issued_invoice_unchanged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- (Two IFs: PL/pgSQL reads an expression when it first runs it, and a line has no invoice's columns.)
  IF TG_TABLE_NAME = 'invoices' THEN
    IF (NEW.id, NEW.organization_id, NEW.billing_run_id, NEW.customer_id, NEW.billing_period,
        NEW.invoice_number, NEW.number_year, NEW.number_sequence, NEW.invoice_date, NEW.due_date,
        NEW.service_start, NEW.service_end, NEW.net_cents, NEW.vat_cents, NEW.gross_cents,
        NEW.iban, NEW.mandate_reference, NEW.created_at)
       IS NOT DISTINCT FROM
       (OLD.id, OLD.organization_id, OLD.billing_run_id, OLD.customer_id, OLD.billing_period,
        OLD.invoice_number, OLD.number_year, OLD.number_sequence, OLD.invoice_date, OLD.due_date,
        OLD.service_start, OLD.service_end, OLD.net_cents, OLD.vat_cents, OLD.gross_cents,
        OLD.iban, OLD.mandate_reference, OLD.created_at)
    THEN
      RETURN NEW;
    END IF;
  END IF;
  RAISE EXCEPTION 'an issued invoice is never changed (%): only its status moves on (exported, paid, cancelled)', TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege',
          HINT = 'cancel it and bill again: see docs/ROLLBACK_PLAYBOOK.md';
END;
$$;

CREATE TRIGGER invoices_stay_as_issued
  BEFORE UPDATE ON invoices
  FOR EACH ROW EXECUTE FUNCTION billing_issued_invoice_unchanged();

CREATE TRIGGER invoice_lines_stay_as_issued
  BEFORE UPDATE ON invoice_lines
  FOR EACH ROW EXECUTE FUNCTION billing_issued_invoice_unchanged();
