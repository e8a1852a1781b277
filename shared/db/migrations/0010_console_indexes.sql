-- The operator console's jobs list, newest first by keyset: per filter, an index that reads backwards from
-- the cursor (the primary key serves the unfiltered list and time ranges).
CREATE INDEX jobs_status_id_idx ON jobs (status, id);
CREATE INDEX jobs_type_id_idx ON jobs (job_type, id);
CREATE INDEX jobs_key_id_idx ON jobs (idempotency_key, id) WHERE idempotency_key IS NOT NULL;
