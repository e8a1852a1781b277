-- A claim of every type reads the ready jobs in order whatever the statistics say, and a job's claim and
-- report write their new row versions beside the old ones.
--
-- - The claim of every type (`claimDueJobsSql`, `claimDueJobsForWorkerSql`) walks the ready priorities
--   on `jobs_ready_idx` (priority, scheduled_at, id), in order. `jobs_ready_type_idx` (job_type first) had
--   the same predicate, so the planner could also read it whole and sort; with statistics taken while the
--   queue was empty (a burst after an idle spell: each estimate one row) it did, reading every ready and
--   waiting entry twice per claim: 27 ms instead of 1.4 ms for a claim of 100 among 26,000 (bench W3's
--   burst). Its predicate now also says `job_type IS NOT NULL`: always true (the column is NOT NULL), implied
--   by any `job_type = ...` of a type's claim, and by nothing in the claim of every type, which can no
--   longer use it.
-- - Fillfactor 50: a claim updates about every row of the pages it reads (due jobs lie in insertion order),
--   and at 70 a page has room for fewer new versions than it holds rows, so about one update in two moved
--   its row to another page, which logs a row lock and the whole row instead of the bytes that changed
--   (migration 0017). At 50 each row's claim fits beside it, and its report mostly fits once the page is
--   pruned of the versions the claims left (one update in ten moves): about 90 B less WAL per job drained. (0017 kept 70 because W3's burst
--   then drained 2.5 times slower: that was the plan above, which 50 tipped; fixed, the burst is flat.) It
--   applies to pages written from now on; finished jobs take that much more room until pruned.
--
-- The index build takes a lock on writes to `jobs` for as long as it lasts: a few seconds per million rows.

ALTER TABLE jobs SET (fillfactor = 50);

CREATE INDEX jobs_ready_by_type_idx ON jobs (job_type, priority, scheduled_at, id)
  WHERE status IN ('pending', 'retrying') AND job_type IS NOT NULL;
DROP INDEX jobs_ready_type_idx;
ALTER INDEX jobs_ready_by_type_idx RENAME TO jobs_ready_type_idx;
