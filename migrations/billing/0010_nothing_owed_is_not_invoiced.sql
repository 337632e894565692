-- A month that comes to 0,00 € is not invoiced (found by a domain review): a contract of 15 cents a
-- month starting on the month's last day came to 0 cents pro rata, and the run issued an invoice of
-- 0,00 € with a line of 0,00 €, which used up an invoice number and asked a SEPA direct debit for
-- less than its minimum of 0,01 €. The run now leaves such lines out and issues no invoice without
-- lines (src/billing/pricing.ts), and counts both on the run. Invoices of 0,00 € issued before stay
-- as issued (they can be cancelled); to find them: SELECT invoice_number FROM invoices WHERE gross_cents = 0.
ALTER TABLE billing_runs
  -- Customers whose month came to 0,00 €: no invoice, no number.
  ADD COLUMN customers_nothing_owed integer NOT NULL DEFAULT 0,
  -- Lines of 0,00 € left out (of those customers, and of invoices with other lines).
  ADD COLUMN zero_lines_left_out integer NOT NULL DEFAULT 0;

-- And the database issues neither, so a row written by hand cannot either. A trigger on INSERT, not a
-- CHECK: a CHECK would also hold for updates, and an invoice of 0,00 € issued before must still be
-- cancellable (its status moves on; what it says never changes, 0007).
CREATE FUNCTION billing_amount_owed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.gross_cents <= 0 THEN
    RAISE EXCEPTION '% of 0,00 € is not issued: nothing is owed', CASE TG_TABLE_NAME WHEN 'invoices' THEN 'an invoice' ELSE 'an invoice line' END
      USING ERRCODE = 'check_violation',
            HINT = 'a SEPA direct debit needs at least 0,01 €, and an invoice of nothing would use up an invoice number';
  END IF;
  RETURN NEW;
END;
$$;

CREATE TRIGGER invoices_amount_owed
  BEFORE INSERT ON invoices
  FOR EACH ROW EXECUTE FUNCTION billing_amount_owed();

CREATE TRIGGER invoice_lines_amount_owed
  BEFORE INSERT ON invoice_lines
  FOR EACH ROW EXECUTE FUNCTION billing_amount_owed();
