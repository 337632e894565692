-- A SEPA direct debit may only be collected under a mandate signed on or before the collection
-- date, an invoice's due date; the billing run never looked at mandate_signed_on, and invoiced a
-- customer whose mandate is signed later (mistyped, or signed in the future) for collection on a day
-- it had none. The run now leaves such a customer out (src/billing/billing.service.ts): no invoice,
-- no number, so a later run for the period bills it once the mandate is valid. It counts them here.
ALTER TABLE billing_runs
  -- Customers left out because their mandate is signed after the run's due date.
  ADD COLUMN customers_mandate_not_yet_valid integer NOT NULL DEFAULT 0
    CONSTRAINT billing_runs_customers_mandate_not_yet_valid_not_negative CHECK (customers_mandate_not_yet_valid >= 0),
  -- The first 20 of their customer numbers, in customer-number order: enough to find them, bounded.
  ADD COLUMN mandate_not_yet_valid_customer_numbers text[] NOT NULL DEFAULT '{}';
