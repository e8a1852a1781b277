-- Less written per job: each attempt's claim and report touch fewer pages and index entries.
--
-- Read record by record (pg_walinspect), a drained job wrote three things it did not need to:
-- - A row lock per report. A BEFORE UPDATE row trigger makes PostgreSQL lock the row (and log the lock)
--   before every update of `jobs`, whether or not the trigger's WHEN holds: 0013's slot trigger did that
--   to every completion, every start and every failure. The slot now follows its job from an AFTER UPDATE
--   trigger, which PostgreSQL queues only when its WHEN holds and which locks nothing. It frees the slot
--   at the end of the statement that ends the attempt (still inside it), and keeps the slot's expiry at the
--   job's lease. `jobs.slot` now keeps the number of the slot the job last held: whether a slot is free is
--   read from the slot row (its holder), never from `jobs.slot`. An executor's report and its next claim in
--   one statement free the slot themselves first (`completeAndClaimNextSql`), so the claim can take it.
-- - An index entry per claim in `jobs_type_id_idx` (the console's jobs of one type, newest first). Running
--   jobs leave it now: the console reads a type's running jobs through `jobs_running_lease_idx` (a claim
--   always sets the lease) and the rest through the new partial index.
-- - A new row version on another page: `jobs` filled its pages full, so a claim's or a report's new row
--   version rarely fit beside the old one, and moving it logs a row lock and the whole row (a version on the
--   same page logs only the bytes that changed). A fillfactor of 70 leaves room on each page for most of
--   the versions a claim and a report make before the page is pruned. It applies to pages written from now
--   on. (50 writes about 100 B less per job, but a burst of due jobs with others waiting and running beside
--   it then drained 2.5 times slower: bench workload W3's burst.)
--
-- Index builds here take a lock on writes to `jobs` for as long as they last: a few seconds per million rows.

ALTER TABLE jobs SET (fillfactor = 70);

DROP TRIGGER jobs_slot_follows_job ON jobs;

CREATE FUNCTION lana_jobs_slot_follows_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status = 'running' AND NEW.attempts = OLD.attempts THEN
    -- The same attempt, begun or renewed: the hold lasts as long as its lease.
    IF NEW.lease_expires_at IS DISTINCT FROM OLD.lease_expires_at THEN
      UPDATE job_slots SET expires_at = NEW.lease_expires_at
      WHERE job_type = OLD.job_type AND slot = OLD.slot AND holder = OLD.id;
    END IF;
  ELSE
    -- The attempt ended (completed, failed, retried, handed back, rescued, cancelled).
    UPDATE job_slots SET holder = NULL, expires_at = NULL
    WHERE job_type = OLD.job_type AND slot = OLD.slot AND holder = OLD.id;
  END IF;
  RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_slot_follows_attempt AFTER UPDATE ON jobs
FOR EACH ROW WHEN (OLD.slot IS NOT NULL AND OLD.status = 'running')
EXECUTE FUNCTION lana_jobs_slot_follows_attempt();

-- During a deploy the previous release's reports free slots as before, at the end of their statement: its
-- executors' report-and-claim takes a next job only if another slot is free, until the new code is live.
DROP FUNCTION lana_jobs_slot_follows_job();

-- `jobs.slot` stays set on finished jobs: a job deleted while it holds a slot is a running one.
DROP TRIGGER jobs_slot_freed_by_delete ON jobs;
CREATE TRIGGER jobs_slot_freed_by_delete AFTER DELETE ON jobs
FOR EACH ROW WHEN (OLD.slot IS NOT NULL AND OLD.status = 'running')
EXECUTE FUNCTION lana_jobs_slot_freed_by_delete();

CREATE INDEX jobs_type_id_not_running_idx ON jobs (job_type, id) WHERE status <> 'running';
DROP INDEX jobs_type_id_idx;
ALTER INDEX jobs_type_id_not_running_idx RENAME TO jobs_type_id_idx;
