-- 0005's comment on invoices.service_start and service_end says "the billed calendar month", but the run
-- stores the span of the invoice's lines (src/billing/pricing.ts, draftInvoice), which is shorter for a
-- customer whose contracts start or end within the month. Said here, where psql's \d+ shows it.
COMMENT ON COLUMN invoices.service_start IS
  'Leistungszeitraum, first day: the earliest first day of the invoice''s lines (of its contracts active in the billed month), not necessarily the month''s first day';
COMMENT ON COLUMN invoices.service_end IS
  'Leistungszeitraum, last day: the latest last day of the invoice''s lines, not necessarily the month''s last day';
