-- iban_is_valid accepted IBANs no bank issues (found by a domain review): check digits 00, 01 and 99
-- (ISO 13616 allows 02 to 98; 01 and 99 can pass mod 97), letters where a country's BBAN has digits
-- (DE92ABCDEFGH0532013000), and any length or country code outside the nine countries 0006 listed
-- (XX0812345678901, a GB IBAN of 21 characters). Now an IBAN must be of the SEPA area, in its
-- country's BBAN format as the IBAN registry gives it (which fixes its length), with check digits
-- 02 to 98 that pass mod 97: as the domain's check (src/billing/iban.ts; test/billing/iban.test.ts
-- compares the two country tables).

-- The country's BBAN (the IBAN after country code and check digits) as a pattern; NULL outside SEPA.
CREATE FUNCTION iban_bban_format(p_country text) RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE p_country
    WHEN 'AD' THEN '^[0-9]{8}[A-Z0-9]{12}$'
    WHEN 'AT' THEN '^[0-9]{16}$'
    WHEN 'BE' THEN '^[0-9]{12}$'
    WHEN 'BG' THEN '^[A-Z]{4}[0-9]{6}[A-Z0-9]{8}$'
    WHEN 'CH' THEN '^[0-9]{5}[A-Z0-9]{12}$'
    WHEN 'CY' THEN '^[0-9]{8}[A-Z0-9]{16}$'
    WHEN 'CZ' THEN '^[0-9]{20}$'
    WHEN 'DE' THEN '^[0-9]{18}$'
    WHEN 'DK' THEN '^[0-9]{14}$'
    WHEN 'EE' THEN '^[0-9]{16}$'
    WHEN 'ES' THEN '^[0-9]{20}$'
    WHEN 'FI' THEN '^[0-9]{14}$'
    WHEN 'FR' THEN '^[0-9]{10}[A-Z0-9]{11}[0-9]{2}$'
    WHEN 'GB' THEN '^[A-Z]{4}[0-9]{14}$'
    WHEN 'GI' THEN '^[A-Z]{4}[A-Z0-9]{15}$'
    WHEN 'GR' THEN '^[0-9]{7}[A-Z0-9]{16}$'
    WHEN 'HR' THEN '^[0-9]{17}$'
    WHEN 'HU' THEN '^[0-9]{24}$'
    WHEN 'IE' THEN '^[A-Z]{4}[0-9]{14}$'
    WHEN 'IS' THEN '^[0-9]{22}$'
    WHEN 'IT' THEN '^[A-Z]{1}[0-9]{10}[A-Z0-9]{12}$'
    WHEN 'LI' THEN '^[0-9]{5}[A-Z0-9]{12}$'
    WHEN 'LT' THEN '^[0-9]{16}$'
    WHEN 'LU' THEN '^[0-9]{3}[A-Z0-9]{13}$'
    WHEN 'LV' THEN '^[A-Z]{4}[A-Z0-9]{13}$'
    WHEN 'MC' THEN '^[0-9]{10}[A-Z0-9]{11}[0-9]{2}$'
    WHEN 'MT' THEN '^[A-Z]{4}[0-9]{5}[A-Z0-9]{18}$'
    WHEN 'NL' THEN '^[A-Z]{4}[0-9]{10}$'
    WHEN 'NO' THEN '^[0-9]{11}$'
    WHEN 'PL' THEN '^[0-9]{24}$'
    WHEN 'PT' THEN '^[0-9]{21}$'
    WHEN 'RO' THEN '^[A-Z]{4}[A-Z0-9]{16}$'
    WHEN 'SE' THEN '^[0-9]{20}$'
    WHEN 'SI' THEN '^[0-9]{15}$'
    WHEN 'SK' THEN '^[0-9]{20}$'
    WHEN 'SM' THEN '^[A-Z]{1}[0-9]{10}[A-Z0-9]{12}$'
    WHEN 'VA' THEN '^[0-9]{18}$'
  END
$$;

CREATE OR REPLACE FUNCTION iban_is_valid(p_iban text) RETURNS boolean LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE
    WHEN p_iban !~ '^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$' THEN false
    -- (coalesce: a country outside SEPA has no format, and ~ NULL is NULL.)
    WHEN NOT coalesce(substr(p_iban, 5) ~ iban_bban_format(left(p_iban, 2)), false) THEN false
    WHEN substr(p_iban, 3, 2) NOT BETWEEN '02' AND '98' THEN false
    ELSE (
      SELECT string_agg(CASE WHEN ch ~ '[0-9]' THEN ch ELSE (ascii(ch) - 55)::text END, '' ORDER BY pos)
      FROM unnest(string_to_array(substr(p_iban, 5) || substr(p_iban, 1, 4), NULL)) WITH ORDINALITY AS t(ch, pos)
    )::numeric % 97 = 1
  END
$$;

-- Customers stored before keep their IBAN: a migration does not change master data, nor should it stop
-- a deployment. Replacing the function does not check them again, and the constraint would still be
-- marked as valid for every row: pg_dump writes it into CREATE TABLE, and a restore would then refuse
-- those rows. So the constraint is added again NOT VALID, and validated when no stored IBAN breaks it.
-- Either way a new or updated customer row is checked. If it stays NOT VALID: correct the IBANs that
-- SELECT id, customer_number, iban FROM customers WHERE NOT iban_is_valid(iban) lists (such a row can be
-- updated only together with its IBAN), then ALTER TABLE customers VALIDATE CONSTRAINT customers_iban_valid.
ALTER TABLE customers DROP CONSTRAINT customers_iban_valid;
ALTER TABLE customers ADD CONSTRAINT customers_iban_valid CHECK (iban_is_valid(iban)) NOT VALID;
DO $$
BEGIN
  ALTER TABLE customers VALIDATE CONSTRAINT customers_iban_valid;
EXCEPTION WHEN check_violation THEN
  RAISE WARNING 'customers_iban_valid stays NOT VALID: some stored customers have an IBAN no bank issues'
    USING HINT = 'SELECT id, customer_number, iban FROM customers WHERE NOT iban_is_valid(iban); correct them, then ALTER TABLE customers VALIDATE CONSTRAINT customers_iban_valid';
END;
$$;
