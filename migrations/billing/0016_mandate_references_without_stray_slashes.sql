-- SEPA's implementation guidelines forbid a reference, identification or identifier (a direct
-- debit's mandate reference among them) that begins or ends with '/' or contains '//' (EPC,
-- "Clarification Paper on the Use of Slashes in References, Identifications and Identifiers");
-- a bank refuses a direct-debit file with such a mandate reference. 0002's pattern admitted them.
--
-- As in 0013, stored customers whose reference breaks the rule are not changed (a reference is
-- the customer's, on the signed mandate): the check is then left NOT VALID, with a warning that says
-- how to find them; new and updated rows are checked either way.
ALTER TABLE customers ADD CONSTRAINT customers_mandate_reference_slashes
  CHECK (left(mandate_reference, 1) <> '/' AND right(mandate_reference, 1) <> '/' AND strpos(mandate_reference, '//') = 0) NOT VALID;

-- Validated here unless a stored row breaks it (the rule stands once, in the CHECK).
DO $$
BEGIN
  ALTER TABLE customers VALIDATE CONSTRAINT customers_mandate_reference_slashes;
EXCEPTION WHEN check_violation THEN
  RAISE WARNING 'customers_mandate_reference_slashes stays NOT VALID: some stored customers have a mandate reference that begins or ends with / or contains //'
    USING HINT = 'SELECT id, customer_number, mandate_reference FROM customers WHERE mandate_reference LIKE ''/%'' OR mandate_reference LIKE ''%/'' OR mandate_reference LIKE ''%//%''; correct them, then ALTER TABLE customers VALIDATE CONSTRAINT customers_mandate_reference_slashes';
END $$;
