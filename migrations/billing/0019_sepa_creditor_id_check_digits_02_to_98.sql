-- A SEPA creditor id's check digits are computed as 98 - (n mod 97) (ISO 7064), so only 02 to 98 are ever
-- issued; but 01 leaves the same remainder mod 97 as 98, and 00 and 99 as 97 and 02, so 0014's check passed
-- an id whose check digits 98 were typed as 01 (DE01ZZZ09999999999, the Bundesbank's test id so altered),
-- which a bank refuses (found by a review). Now check digits outside 02 to 98 are refused too, as the IBAN
-- check does (0009) and as the domain's check (src/billing/iban.ts, creditorIdProblem).
CREATE OR REPLACE FUNCTION sepa_creditor_id_is_valid(p_id text) RETURNS boolean LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE
    WHEN p_id !~ '^[A-Z]{2}[0-9]{2}[A-Z0-9]{3}[A-Z0-9]{1,28}$' THEN false
    WHEN substr(p_id, 3, 2) NOT BETWEEN '02' AND '98' THEN false
    WHEN left(p_id, 2) = 'DE' AND p_id !~ '^DE[0-9]{2}[A-Z0-9]{3}[0-9]{11}$' THEN false
    ELSE (
      SELECT string_agg(CASE WHEN ch ~ '[0-9]' THEN ch ELSE (ascii(ch) - 55)::text END, '' ORDER BY pos)
      FROM unnest(string_to_array(substr(p_id, 8) || substr(p_id, 1, 4), NULL)) WITH ORDINALITY AS t(ch, pos)
    )::numeric % 97 = 1
  END
$$;

-- A constraint keeps its "validated" mark when its function changes: it is added again, NOT VALID, and
-- validated when no stored organization breaks the new rule; otherwise it stays NOT VALID with a warning
-- (the service repeats it at every start), as in 0014.
ALTER TABLE organizations
  DROP CONSTRAINT organizations_sepa_creditor_id_valid,
  ADD CONSTRAINT organizations_sepa_creditor_id_valid CHECK (sepa_creditor_id_is_valid(sepa_creditor_id)) NOT VALID;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM organizations WHERE NOT sepa_creditor_id_is_valid(sepa_creditor_id)) THEN
    ALTER TABLE organizations VALIDATE CONSTRAINT organizations_sepa_creditor_id_valid;
  ELSE
    RAISE WARNING 'organizations_sepa_creditor_id_valid stays NOT VALID: some stored organizations have a SEPA creditor id whose check digits do not match'
      USING HINT = 'SELECT id, name, sepa_creditor_id FROM organizations WHERE NOT sepa_creditor_id_is_valid(sepa_creditor_id); correct them, then ALTER TABLE organizations VALIDATE CONSTRAINT organizations_sepa_creditor_id_valid';
  END IF;
END $$;
