-- A SEPA creditor identifier (Gläubiger-ID) was checked for its shape only: check digits 00 or 12,
-- and a German one of 23 characters, passed (found by a domain review), and a bank rejects every
-- direct-debit file that carries such an id. Now its check digits must pass mod 97 as ISO 7064
-- computes them for it (over the national identifier and the country code, the business code
-- "ZZZ" left out), and a German one is DE, two check digits, a three-character business code and
-- an 11-digit national identifier (18 characters, the Bundesbank's format): as the domain's check
-- (src/billing/iban.ts, creditorIdProblem).
CREATE FUNCTION sepa_creditor_id_is_valid(p_id text) RETURNS boolean LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE
    WHEN p_id !~ '^[A-Z]{2}[0-9]{2}[A-Z0-9]{3}[A-Z0-9]{1,28}$' THEN false
    WHEN left(p_id, 2) = 'DE' AND p_id !~ '^DE[0-9]{2}[A-Z0-9]{3}[0-9]{11}$' THEN false
    ELSE (
      SELECT string_agg(CASE WHEN ch ~ '[0-9]' THEN ch ELSE (ascii(ch) - 55)::text END, '' ORDER BY pos)
      FROM unnest(string_to_array(substr(p_id, 8) || substr(p_id, 1, 4), NULL)) WITH ORDINALITY AS t(ch, pos)
    )::numeric % 97 = 1
  END
$$;

-- Organizations stored before keep their id (master data; a migration does not stop a deployment over
-- it): the check is validated when none breaks it, and otherwise left NOT VALID with a warning (the
-- service repeats it at every start); new and updated rows are checked either way.
ALTER TABLE organizations ADD CONSTRAINT organizations_sepa_creditor_id_valid CHECK (sepa_creditor_id_is_valid(sepa_creditor_id)) NOT VALID;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM organizations WHERE NOT sepa_creditor_id_is_valid(sepa_creditor_id)) THEN
    ALTER TABLE organizations VALIDATE CONSTRAINT organizations_sepa_creditor_id_valid;
  ELSE
    RAISE WARNING 'organizations_sepa_creditor_id_valid stays NOT VALID: some stored organizations have a SEPA creditor id whose check digits do not match'
      USING HINT = 'SELECT id, name, sepa_creditor_id FROM organizations WHERE NOT sepa_creditor_id_is_valid(sepa_creditor_id); correct them, then ALTER TABLE organizations VALIDATE CONSTRAINT organizations_sepa_creditor_id_valid';
  END IF;
END $$;
