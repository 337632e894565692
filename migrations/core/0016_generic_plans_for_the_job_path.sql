-- The statements inside claim_next_job, complete_jobs and complete_and_claim
-- are planned once per session instead of on every call. PL/pgSQL caches
-- them, but by default it plans a statement with parameters anew for each
-- call (a custom plan) as long as the plan for unknown values looks dearer,
-- and with LIMIT p_limit unknown it always did: every claim and completion
-- planned its CTEs again, 16 % of the server's CPU in a profile of back-to-back
-- complete_and_claim calls (perf, 2026-11-29). The generic plan is the same
-- index lookups (0013 pins them: no sequential or bitmap scans). The backend's
-- CPU per complete_and_claim of 5 + 5 jobs on an analyzed table: 0.91–0.95 ms
-- as migrated, 1.20–1.24 ms before this and 0017 (bench/probes/statementCost.ts,
-- three alternating rounds, 2026-11-29; with no jobs held elsewhere 0017 does
-- not change the plans, so the difference is this migration's).
ALTER FUNCTION claim_next_job(text, text[], integer, timestamptz, interval)
  SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION complete_jobs(text, uuid[], integer[], timestamptz)
  SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION complete_and_claim(text, uuid[], integer[], text[], integer, timestamptz, interval)
  SET plan_cache_mode = force_generic_plan;
