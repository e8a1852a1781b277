-- The operator console's jobs list, newest first by keyset: per filter, an index that reads backwards from
-- the cursor. The primary key serves the unfiltered list, time ranges and completed jobs (most of the
-- history); jobs_failed_idx the failed ones. No index leads with status: the hot statements' cached plans
-- would take it for their `status = 'running'` and read every running row (test/jobs/cached-plans.test.ts).
CREATE INDEX jobs_active_id_idx ON jobs (id) WHERE status IN ('pending', 'retrying', 'running');
CREATE INDEX jobs_cancelled_idx ON jobs (id) WHERE status = 'cancelled';
CREATE INDEX jobs_type_id_idx ON jobs (job_type, id);
CREATE INDEX jobs_key_id_idx ON jobs (idempotency_key, id) WHERE idempotency_key IS NOT NULL;
