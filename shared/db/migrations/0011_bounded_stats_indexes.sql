-- `lana-jobs stats` and the console's overview count the queue exactly (through the ready and running
-- indexes) and finished jobs over a recent window (through this index), so neither reads the whole history.
CREATE INDEX jobs_finished_at_idx ON jobs (completed_at) WHERE status IN ('completed', 'failed', 'cancelled');
