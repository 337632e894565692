-- The IBAN checksum (ISO 13616, mod 97), so that no invalid IBAN reaches a SEPA
-- export even when rows are inserted by hand. The domain Schema checks the same.
CREATE FUNCTION iban_is_valid(p_iban text) RETURNS boolean LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE
    WHEN p_iban !~ '^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$' THEN false
    ELSE (
      SELECT string_agg(CASE WHEN ch ~ '[0-9]' THEN ch ELSE (ascii(ch) - 55)::text END, '' ORDER BY pos)
      FROM unnest(string_to_array(substr(p_iban, 5) || substr(p_iban, 1, 4), NULL)) WITH ORDINALITY AS t(ch, pos)
    )::numeric % 97 = 1
  END
$$;

-- Customers pay by SEPA direct debit (Lastschrift): IBAN, optional BIC (not
-- needed inside the SEPA area), and the mandate they signed.
CREATE TABLE customers (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id   uuid NOT NULL REFERENCES organizations (id),
  customer_number   text NOT NULL CONSTRAINT customers_customer_number_not_blank CHECK (btrim(customer_number) <> ''),
  name              text NOT NULL CONSTRAINT customers_name_not_blank CHECK (btrim(name) <> ''),
  email             text,
  iban              text NOT NULL CONSTRAINT customers_iban_valid CHECK (iban_is_valid(iban)),
  bic               text CONSTRAINT customers_bic_format CHECK (bic ~ '^[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?$'),
  -- SEPA allows up to 35 characters from a restricted set.
  mandate_reference text NOT NULL
                    CONSTRAINT customers_mandate_reference_format CHECK (mandate_reference ~ '^[A-Za-z0-9+?/:().,'' -]{1,35}$'),
  mandate_signed_on date NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT customers_number_unique UNIQUE (organization_id, customer_number),
  -- A mandate reference identifies one mandate of one creditor.
  CONSTRAINT customers_mandate_reference_unique UNIQUE (organization_id, mandate_reference),
  -- Target of the tenant-safe composite foreign keys.
  CONSTRAINT customers_organization_id_unique UNIQUE (organization_id, id)
);
