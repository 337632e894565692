-- A billing run fixed its invoice date when it started, but worked out the due date (the direct debit's
-- collection date) from the organization's payment terms in every chunk: terms changed while a run
-- worked, or between a crashed attempt and its retry, gave invoices of one run and one date two due dates,
-- and checked the mandates of its chunks against different days (found by a review). The run now fixes
-- its due date when it starts, with its invoice date. Runs started before have none: their next chunk
-- fixes it from the terms then, as before, and keeps it. Adding a column without a default rewrites nothing.
ALTER TABLE billing_runs ADD COLUMN due_date date;
