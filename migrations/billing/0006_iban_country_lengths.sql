-- iban_is_valid also checks the length of the countries the platform collects
-- from, as the domain's check does (src/billing/iban.ts): a German IBAN with
-- a digit too many but matching check digits passed the database's check, so
-- a customer row written by hand could carry it into invoices and a SEPA
-- export the bank would reject. Rows stored before keep their IBAN; to find
-- any: SELECT id, iban FROM customers WHERE NOT iban_is_valid(iban).
CREATE OR REPLACE FUNCTION iban_is_valid(p_iban text) RETURNS boolean LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE
    WHEN p_iban !~ '^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$' THEN false
    WHEN length(p_iban) <> coalesce(
      CASE left(p_iban, 2)
        WHEN 'AT' THEN 20 WHEN 'BE' THEN 16 WHEN 'CH' THEN 21 WHEN 'DE' THEN 22 WHEN 'ES' THEN 24
        WHEN 'FR' THEN 27 WHEN 'IT' THEN 27 WHEN 'LU' THEN 20 WHEN 'NL' THEN 18
      END, length(p_iban)) THEN false
    ELSE (
      SELECT string_agg(CASE WHEN ch ~ '[0-9]' THEN ch ELSE (ascii(ch) - 55)::text END, '' ORDER BY pos)
      FROM unnest(string_to_array(substr(p_iban, 5) || substr(p_iban, 1, 4), NULL)) WITH ORDINALITY AS t(ch, pos)
    )::numeric % 97 = 1
  END
$$;
