-- `jobs stats` and the console's overview count the queue exactly and finished jobs over a recent window,
-- so neither reads the whole history.
CREATE INDEX jobs_active_type_status_idx ON jobs (job_type, status) WHERE status IN ('pending', 'retrying', 'running');
CREATE INDEX jobs_finished_at_idx ON jobs (completed_at) WHERE status IN ('completed', 'failed', 'cancelled');
