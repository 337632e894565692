-- What 0007 left open, found by a review:
-- 1. An invoice's status could move back: paid -> open erased a payment, cancelled -> open brought a
--    cancelled invoice back (and past the rollback's refusal, which looks for paid and exported ones).
--    Now it only moves on: open -> exported -> paid, and from any of them to cancelled; and a time or
--    reason once recorded (exported_at, paid_at, cancelled_at, cancellation_reason) stays as it is.
-- 2. Lines could be added to an issued invoice, which then said less than its lines. Now an invoice's
--    amounts must be the sums of its lines when a transaction that adds lines commits, as the billing
--    run writes them (an invoice and its lines in one transaction; pricing.ts sums the lines).

CREATE OR REPLACE FUNCTION billing_issued_invoice_unchanged() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  -- cancelled is last: every status may end there.
  v_order constant text[] := ARRAY['open', 'exported', 'paid', 'cancelled'];
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
      IF array_position(v_order, NEW.status) < array_position(v_order, OLD.status) THEN
        RAISE EXCEPTION 'invoice % is %: its status never moves back to %', OLD.invoice_number, OLD.status, NEW.status
          USING ERRCODE = 'insufficient_privilege',
                HINT = 'an invoice moves on from open to exported, paid or cancelled; to bill again, see docs/ROLLBACK_PLAYBOOK.md';
      END IF;
      IF (OLD.exported_at IS NOT NULL AND NEW.exported_at IS DISTINCT FROM OLD.exported_at)
         OR (OLD.paid_at IS NOT NULL AND NEW.paid_at IS DISTINCT FROM OLD.paid_at)
         OR (OLD.cancelled_at IS NOT NULL AND NEW.cancelled_at IS DISTINCT FROM OLD.cancelled_at)
         OR (OLD.cancellation_reason IS NOT NULL AND NEW.cancellation_reason IS DISTINCT FROM OLD.cancellation_reason)
      THEN
        RAISE EXCEPTION 'invoice %: when it was exported, paid or cancelled, and why, stays as recorded', OLD.invoice_number
          USING ERRCODE = 'insufficient_privilege';
      END IF;
      RETURN NEW;
    END IF;
  END IF;
  RAISE EXCEPTION 'an issued invoice is never changed (%): only its status moves on (exported, paid, cancelled)', TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege',
          HINT = 'cancel it and bill again: see docs/ROLLBACK_PLAYBOOK.md';
END;
$$;

CREATE FUNCTION billing_invoice_adds_up() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  v_invoice record;
BEGIN
  SELECT i.invoice_number, i.net_cents, i.vat_cents,
         (SELECT coalesce(sum(l.net_cents), 0) FROM invoice_lines l WHERE l.invoice_id = i.id) AS lines_net,
         (SELECT coalesce(sum(l.vat_cents), 0) FROM invoice_lines l WHERE l.invoice_id = i.id) AS lines_vat
  INTO v_invoice
  FROM invoices i WHERE i.organization_id = NEW.organization_id AND i.id = NEW.invoice_id;
  IF (v_invoice.net_cents, v_invoice.vat_cents) IS DISTINCT FROM (v_invoice.lines_net, v_invoice.lines_vat) THEN
    RAISE EXCEPTION 'invoice % says net % and VAT % cents, its lines add up to net % and VAT %: lines come only with their invoice',
      v_invoice.invoice_number, v_invoice.net_cents, v_invoice.vat_cents, v_invoice.lines_net, v_invoice.lines_vat
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'an issued invoice is never changed: cancel it and bill again, see docs/ROLLBACK_PLAYBOOK.md';
  END IF;
  RETURN NULL;
END;
$$;

-- Checked when the transaction commits, once its invoices and all their lines are in.
CREATE CONSTRAINT TRIGGER invoice_lines_add_up_to_their_invoice
  AFTER INSERT ON invoice_lines
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION billing_invoice_adds_up();
