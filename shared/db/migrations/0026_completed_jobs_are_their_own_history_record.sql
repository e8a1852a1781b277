-- A completed job's row is its last attempt's history record.
--
-- Every attempt that ended wrote a row into `job_executions`. A completion, by far the most common ending,
-- wrote one that said nothing the job row does not, but the measured duration: the row and its primary-key
-- entry were about a fifth of the WAL a drained job writes. The completion now keeps the duration on the
-- job row (`jobs.duration_ms`) and writes no record. The table of records, renamed
-- `job_execution_records`, keeps every other ending (failures, retries, rescues, releases, cancels);
-- `job_executions` is now a view: those records and the completed attempt of each job whose row records it.
--
-- Expand-only (migrations/README.md): the previous release's code, still running during a deploy, completes
-- jobs without setting `duration_ms` and inserts the record through the view instead, which the view's
-- INSTEAD OF trigger writes into the table. The view reads a job row as a record only when `duration_ms`
-- is set, so such a job is counted once. That code's retention prune deletes through the view too.
--
-- The renames and the new column take a brief exclusive lock each; nothing is rewritten or backfilled.
-- Prepared statements that named the table are planned again, against the view, on their next run.

ALTER TABLE jobs ADD COLUMN duration_ms integer;

COMMENT ON COLUMN jobs.duration_ms IS
  'How long the completed attempt ran, in milliseconds (the executor''s measure, else the time since the '
  'attempt began or was claimed). Set by the completion, which then writes no job_execution_records row: '
  'the job row is that attempt''s record in the view job_executions. NULL otherwise, and on jobs '
  'completed by code older than migration 0026 (those wrote a record row).';

ALTER TABLE job_executions RENAME TO job_execution_records;
ALTER TABLE job_execution_records RENAME CONSTRAINT job_executions_pkey TO job_execution_records_pkey;
ALTER TABLE job_execution_records RENAME CONSTRAINT job_executions_attempt_check
  TO job_execution_records_attempt_check;
ALTER TABLE job_execution_records RENAME CONSTRAINT job_executions_outcome_check
  TO job_execution_records_outcome_check;
ALTER INDEX job_executions_finished_idx RENAME TO job_execution_records_finished_idx;

-- One row per finished attempt, as the table was. A job row is read as a record only once it is completed
-- and holds its duration: the claim time is the completion statements' own expression (a row claimed
-- before `claimed_at` existed: its lease less the lease's length), and the finish is the completion's time.
CREATE VIEW job_executions AS
SELECT job_id, attempt, claimed_at, started_at, finished_at, outcome, error, duration_ms
FROM job_execution_records
UNION ALL
SELECT j.id, j.attempts, COALESCE(j.claimed_at, j.lease_expires_at - make_interval(secs => j.lease_seconds)),
       j.started_at, j.completed_at, 'completed'::text, NULL::text, j.duration_ms
FROM jobs j
WHERE j.status = 'completed' AND j.duration_ms IS NOT NULL;

-- The previous release's writes through the view: its records go into the table.
CREATE FUNCTION lana_jobs_execution_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_execution_records (job_id, attempt, claimed_at, started_at, finished_at, outcome, error,
                                     duration_ms)
  VALUES (NEW.job_id, NEW.attempt, NEW.claimed_at, NEW.started_at, NEW.finished_at, NEW.outcome, NEW.error,
          NEW.duration_ms);
  RETURN NEW;
END;
$$;

CREATE TRIGGER job_executions_insert INSTEAD OF INSERT ON job_executions
FOR EACH ROW EXECUTE FUNCTION lana_jobs_execution_inserted();

-- A record read from a job row has no row of its own to delete: it goes when its job row does.
CREATE FUNCTION lana_jobs_execution_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM job_execution_records WHERE job_id = OLD.job_id AND attempt = OLD.attempt;
  IF FOUND THEN
    RETURN OLD;
  END IF;
  RETURN NULL;
END;
$$;

CREATE TRIGGER job_executions_delete INSTEAD OF DELETE ON job_executions
FOR EACH ROW EXECUTE FUNCTION lana_jobs_execution_deleted();

-- No code takes a job out of `completed` today. If some ever does, the statement that does it also writes
-- the completed attempt's record into the table, so the history stays whole. An AFTER trigger with a WHEN,
-- as 0017's: a BEFORE row trigger would make every update of `jobs` lock and log its row.
CREATE FUNCTION lana_jobs_completion_recorded() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_execution_records (job_id, attempt, claimed_at, started_at, finished_at, outcome, error,
                                     duration_ms)
  VALUES (OLD.id, OLD.attempts,
          COALESCE(OLD.claimed_at, OLD.lease_expires_at - make_interval(secs => OLD.lease_seconds)),
          OLD.started_at, OLD.completed_at, 'completed', NULL, OLD.duration_ms);
  RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_completion_keeps_its_record AFTER UPDATE ON jobs
FOR EACH ROW WHEN (OLD.status = 'completed' AND OLD.duration_ms IS NOT NULL AND NEW.status <> 'completed')
EXECUTE FUNCTION lana_jobs_completion_recorded();
