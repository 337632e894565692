-- An invoice written by hand, past the billing run, escaped two rules (found by a domain review): it
-- could have no lines at all (0008's "adds up" check runs when a line is inserted, so none ran), and it
-- could take a number its counter had not given out: 9999 left 34 to 9998 as a gap in a gapless
-- sequence, and the counter's next number taken by hand made every later billing run of that
-- organization and year fail on the unique number. Now, when the transaction commits, every new invoice
-- has at least one line (which 0008 then checks add up) and a number_sequence its organization's counter
-- for that year has reached, as a billing run's invoices always do (it takes the numbers from the
-- counter in the same transaction). Invoices stored before are not checked again.
CREATE FUNCTION billing_invoice_is_whole() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  v_last_number integer;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM invoice_lines l WHERE l.invoice_id = NEW.id) THEN
    RAISE EXCEPTION 'invoice % has no lines: an invoice is issued with its lines, by a billing run', NEW.invoice_number
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  SELECT c.last_number INTO v_last_number
  FROM invoice_number_counters c WHERE c.organization_id = NEW.organization_id AND c.year = NEW.number_year;
  IF v_last_number IS NULL OR NEW.number_sequence > v_last_number THEN
    RAISE EXCEPTION 'invoice % takes number % of %, which the counter has not given out (last given out: %): numbers come from invoice_number_counters, without gaps',
      NEW.invoice_number, NEW.number_sequence, NEW.number_year, coalesce(v_last_number, 0)
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NULL;
END;
$$;

-- Checked when the transaction commits, once the invoice's lines and its counter are in.
CREATE CONSTRAINT TRIGGER invoices_come_with_lines_and_a_number_given_out
  AFTER INSERT ON invoices
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION billing_invoice_is_whole();
