-- A mandate reference identifies one mandate of one creditor (0002), and banks compare it without
-- regard to case; a blank one identifies none. 0002's pattern admitted " " and references with a
-- space before or after, and its uniqueness told "SWM-K-010001" from "swm-k-010001" and from
-- "SWM-K-010001 ": three customers' invoices could be collected under what a bank takes for one
-- mandate (found by a domain review). Now a reference neither begins nor ends with a space, and is
-- unique per organization whatever its case.
--
-- Stored rows that break either rule are not changed here (a reference is the customer's, on the
-- signed mandate): the check is then left NOT VALID, or the index not built, with a warning that
-- says how to find the rows; new and updated rows are checked either way by the trimmed rule.
ALTER TABLE customers ADD CONSTRAINT customers_mandate_reference_trimmed
  CHECK (mandate_reference = btrim(mandate_reference, ' ') AND mandate_reference <> '') NOT VALID;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM customers WHERE NOT (mandate_reference = btrim(mandate_reference, ' ') AND mandate_reference <> '')) THEN
    ALTER TABLE customers VALIDATE CONSTRAINT customers_mandate_reference_trimmed;
  ELSE
    RAISE WARNING 'customers_mandate_reference_trimmed stays NOT VALID: some stored customers have a blank mandate reference or one with a space before or after it'
      USING HINT = 'SELECT id, customer_number, mandate_reference FROM customers WHERE mandate_reference <> btrim(mandate_reference, '' '') OR btrim(mandate_reference, '' '') = ''''; correct them, then ALTER TABLE customers VALIDATE CONSTRAINT customers_mandate_reference_trimmed';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM customers GROUP BY organization_id, upper(mandate_reference) HAVING count(*) > 1) THEN
    CREATE UNIQUE INDEX customers_mandate_reference_unique_any_case ON customers (organization_id, upper(mandate_reference));
  ELSE
    RAISE WARNING 'customers_mandate_reference_unique_any_case not built: some customers of one organization share a mandate reference but for its case'
      USING HINT = 'SELECT organization_id, upper(mandate_reference), array_agg(customer_number) FROM customers GROUP BY 1, 2 HAVING count(*) > 1; give each its own, then CREATE UNIQUE INDEX customers_mandate_reference_unique_any_case ON customers (organization_id, upper(mandate_reference))';
  END IF;
END $$;
