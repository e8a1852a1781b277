-- Failed jobs stay until an operator retries or purges them, so "list the failed jobs, newest first" is
-- the operator's everyday question, asked of a table that holds weeks of completed history. This index
-- holds only the failed rows (few, and written once, when a job fails for good), in listing order.
CREATE INDEX jobs_failed_idx ON jobs (id) WHERE status = 'failed';
