-- The operator console's jobs list, newest first by keyset: per filter, an index that reads backwards from
-- the cursor. The primary key serves the unfiltered list, time ranges and the completed, pending, retrying
-- and running filters (completed jobs are most of the history; queued and running ones are mostly the
-- newest); jobs_failed_idx the failed ones. No new index covers the ready rows or leads with status: the
-- queue's statements would take it over jobs_ready_idx, and the hot statements' cached plans would take a
-- status index for `status = 'running'` (test/jobs/claim-index.test.ts, test/jobs/cached-plans.test.ts).
CREATE INDEX jobs_cancelled_idx ON jobs (id) WHERE status = 'cancelled';
CREATE INDEX jobs_type_id_idx ON jobs (job_type, id);
CREATE INDEX jobs_key_id_idx ON jobs (idempotency_key, id) WHERE idempotency_key IS NOT NULL;
