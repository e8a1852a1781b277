-- The lease index serves the rescuer and the overdue count (`status = 'running' AND lease_expires_at < t`).
-- Its predicate also names the lease, which every running row has (a CHECK says so), so that statements
-- that find running jobs by id (start, complete, fail, release) cannot pick it: a plan cached while few jobs
-- ran would otherwise keep reading the whole index for each of them when thousands run. Those statements
-- say `status = 'running'` but never `lease_expires_at IS NOT NULL`, so they take the primary key.
DROP INDEX jobs_running_lease_idx;
CREATE INDEX jobs_running_lease_idx ON jobs (lease_expires_at) WHERE status = 'running' AND lease_expires_at IS NOT NULL;
