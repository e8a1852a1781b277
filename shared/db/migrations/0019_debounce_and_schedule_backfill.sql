-- Debounce and schedule backfill (issue 27).
--
-- Debounce: an enqueue with a debounce key joins the type's pending job with that key, if one has not
-- started yet: the job takes the new payload and its run time moves to the end of the new window (never
-- past `debounce_until`, the burst's deadline from its first enqueue, when a maximum wait was given).
-- Once the job is claimed it leaves the index below, so the next enqueue starts a new burst. The index
-- holds only never-claimed pending rows (`attempts = 0`): a job an operator retries, or one handed back
-- unstarted, has attempts and never meets a new burst's job. The upsert (`upsertDebouncedJobSql`) is one
-- statement arbitrated by this index, so concurrent enqueues with one key leave one pending job.
--
-- Expand-only: nullable columns the previous release's code never writes or reads.
ALTER TABLE jobs
  ADD COLUMN debounce_key text CHECK (length(debounce_key) BETWEEN 1 AND 255),
  ADD COLUMN debounce_until timestamptz;

CREATE UNIQUE INDEX jobs_debounce_idx ON jobs (job_type, debounce_key)
  WHERE debounce_key IS NOT NULL AND status = 'pending' AND attempts = 0;

-- Schedule backfill: the ticks of schedules that declare a backfill window, one row per tick ever fired,
-- inserted in the transaction that enqueues the tick's job. A tick is enqueued only by the firer whose
-- insert here made the row, so a missed tick inside the window is enqueued once even after its job is
-- gone (retention may delete a completed job after one day, inside a three-day window). The tick's job
-- key (`schedule:<name>@<tick>`) still guards it as for every schedule. No foreign key: jobs are deleted
-- by retention and purge while their ticks stay. A row is under 100 bytes; a daily schedule adds 365 a
-- year. `fired_by` is the firing call's token: a statement the Data API's client sends again inside the
-- transaction finds the ticks its first send recorded (see `recordScheduleTicksSql`).
CREATE TABLE schedule_ticks (
  schedule text NOT NULL CHECK (length(schedule) BETWEEN 1 AND 200),
  tick timestamptz NOT NULL,
  fired_at timestamptz NOT NULL DEFAULT now(),
  fired_by uuid NOT NULL,
  PRIMARY KEY (schedule, tick)
);
