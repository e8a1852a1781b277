import { JOB_COLUMNS } from '../model.js';
import { LEASE_GRACE_SECONDS } from '../registry.js';
import { CLAIMED_AT, closeAttemptsSql, earliestPerPrioritySql, NOW, readyPriorities } from './common.js';

/** The operator's statements: cancel, retry, show, list, the queue's state and activity, stats, retention. */

/**
 * An operator stops a job that has not finished. A running attempt is closed; its late report is fenced out.
 * `current` locks the row (FOR UPDATE), so a cancel that waited on a concurrent claim or report reads the row
 * as that statement left it: without the lock it would read the statement's snapshot (say `pending`) while
 * the update hits the newer `running` row, and the attempt the claim started would never be closed.
 */
export const cancelJobSql = `
WITH current AS (
  SELECT j.id, j.attempts, j.status AS was, j.started_at AS run_started_at, ${CLAIMED_AT} AS attempt_claimed_at
  FROM jobs j WHERE j.id = CAST(:id AS uuid)
  FOR UPDATE
), cancelled AS (
  UPDATE jobs j
  SET status = 'cancelled', completed_at = ${NOW}, updated_at = ${NOW},
      last_error = COALESCE(CAST(:reason AS text), 'cancelled by an operator')
  FROM current c
  WHERE j.id = c.id AND j.status IN ('pending', 'retrying', 'running')
  RETURNING j.*, c.was, c.run_started_at, c.attempt_claimed_at
), closed AS (${closeAttemptsSql(`(SELECT id, attempts, attempt_claimed_at AS claimed_at, run_started_at, 'cancelled'::text AS outcome,
      'cancelled by an operator'::text AS error, NULL::integer AS duration_ms
    FROM cancelled WHERE was = 'running')`)}
)
SELECT ${JOB_COLUMNS} FROM cancelled`;

/**
 * An operator puts a failed or cancelled job back in the queue, due now, with a fresh attempt budget.
 * `attempts` keeps counting (it is the fencing token); the backoff restarts from 2 minutes.
 */
export const retryJobSql = `
WITH retried AS (
  UPDATE jobs
  SET status = 'pending', scheduled_at = ${NOW}, completed_at = NULL, started_at = NULL,
      max_attempts = attempts + :budget, attempt_offset = attempts, updated_at = ${NOW}
  WHERE id = CAST(:id AS uuid) AND status IN ('failed', 'cancelled')
  RETURNING ${JOB_COLUMNS}
), woken AS (
  SELECT pg_notify('lana_jobs', '') FROM (SELECT 1 FROM retried) AS any_retried
)
-- A SELECT in WITH runs only if referenced: the count makes the notification happen.
SELECT retried.* FROM retried, (SELECT count(*) FROM woken) AS notified`;

export const jobByIdSql = `SELECT ${JOB_COLUMNS} FROM jobs WHERE id = CAST(:id AS uuid)`;

/** Finished attempts, plus the one in progress (from the job row, with no outcome yet). */
export const executionsByJobSql = `
SELECT job_id, attempt, claimed_at, started_at, finished_at, outcome, error, duration_ms
FROM job_executions WHERE job_id = CAST(:id AS uuid)
UNION ALL
SELECT j.id, j.attempts, ${CLAIMED_AT}, j.started_at, NULL, NULL, NULL, NULL
FROM jobs j WHERE j.id = CAST(:id AS uuid) AND j.status = 'running'
ORDER BY attempt`;

/**
 * Newest first, optionally filtered by status and type. Ids are UUID v7 that begin with their creation
 * time (the enqueuing process's clock, to the millisecond), so the primary key (or, for failed jobs,
 * `jobs_failed_idx`) read backwards gives the order: a listing reads the rows it shows and those its filter
 * skips, not the whole history sorted by `created_at`.
 */
export const listJobsSql = `
SELECT ${JOB_COLUMNS} FROM jobs
WHERE (CAST(:status AS text) IS NULL OR status = CAST(:status AS text))
  AND (CAST(:job_type AS text) IS NULL OR job_type = CAST(:job_type AS text))
ORDER BY id DESC
LIMIT :limit`;

/**
 * Ready jobs that are due, and the age of the oldest: the queue-backup signals, read on every fetch-ready
 * run. Counted priority by priority over the due range only, as the claim reads it, so the jobs scheduled
 * ahead cost nothing.
 */
export const queueStateSql = `
WITH RECURSIVE ${readyPriorities}, due AS (
  SELECT r.scheduled_at AS oldest, d.n FROM ready_priorities r CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM jobs
    WHERE status IN ('pending', 'retrying') AND priority = r.priority AND scheduled_at <= ${NOW}) d
  WHERE r.scheduled_at <= ${NOW}
)
SELECT COALESCE(sum(n), 0)::integer AS depth,
       COALESCE(extract(epoch FROM ${NOW} - min(oldest)), 0)::float8 AS oldest_ready_age_seconds
FROM due`;

/**
 * Once a minute (fetch-ready's scheduled run): jobs created in the last minute by any path (the CLI,
 * application code, executors, raw SQL), read as a primary-key range (ids begin with their creation
 * time), and attempts still running past their type's timeout (long-running jobs, before their lease
 * expires), through the running index. Each reads what it counts.
 */
export const queueActivitySql = `
SELECT (SELECT count(*) FROM jobs
        WHERE id >= lana_uuid_v7_floor(${NOW} - interval '2 minutes')
          AND created_at > ${NOW} - interval '1 minute' AND created_at <= ${NOW})::integer
         AS enqueued_last_minute,
       (SELECT count(*) FROM jobs
        WHERE status = 'running' AND lease_expires_at IS NOT NULL AND started_at IS NOT NULL
          AND started_at + make_interval(secs => lease_seconds - ${LEASE_GRACE_SECONDS}) < ${NOW})::integer
         AS running_past_timeout`;

/** The earliest time a ready job becomes due (for a worker deciding how long it may sleep). */
export const nextDueAtSql = `
WITH RECURSIVE ${earliestPerPrioritySql('earliest')}
SELECT min(scheduled_at) AS next_due_at FROM earliest`;

export const countsByStatusAndTypeSql = `
SELECT job_type, status, count(*)::integer AS count FROM jobs GROUP BY job_type, status ORDER BY job_type, status`;

/** Attempts finished in the last :window_seconds, by outcome (failure rate over the last hour). */
export const recentOutcomesSql = `
SELECT j.job_type, e.outcome, count(*)::integer AS count,
       COALESCE(avg(e.duration_ms), 0)::float8 AS avg_duration_ms,
       COALESCE(max(e.duration_ms), 0)::integer AS max_duration_ms
FROM job_executions e JOIN jobs j ON j.id = e.job_id
WHERE e.finished_at >= ${NOW} - make_interval(secs => :window_seconds)
GROUP BY j.job_type, e.outcome
ORDER BY j.job_type, e.outcome`;

/** Running attempts older than their lease (the long-running-jobs signal). */
export const overdueRunningSql = `
SELECT count(*)::integer AS overdue FROM jobs WHERE status = 'running' AND lease_expires_at < ${NOW}`;

/**
 * Retention: deletes up to :batch finished jobs of the given statuses (a JSON list) whose completion is
 * older than :before, with their execution rows. Bounded, so each call is a short transaction; callers
 * loop until it returns fewer than :batch.
 */
export const pruneFinishedJobsSql = `
WITH doomed AS (
  SELECT id FROM jobs
  WHERE status IN (SELECT jsonb_array_elements_text(CAST(:statuses AS jsonb)))
    AND completed_at < CAST(:before AS timestamptz)
    AND (CAST(:job_type AS text) IS NULL OR job_type = CAST(:job_type AS text))
  LIMIT :batch
  FOR UPDATE SKIP LOCKED
), executions AS (
  DELETE FROM job_executions e USING doomed d WHERE e.job_id = d.id
)
DELETE FROM jobs j USING doomed d WHERE j.id = d.id
RETURNING j.id`;

/** What `pruneFinishedJobsSql` would delete, by type and status: the purge's dry run. */
export const countFinishedJobsSql = `
SELECT job_type, status, count(*)::integer AS count FROM jobs
WHERE status IN (SELECT jsonb_array_elements_text(CAST(:statuses AS jsonb)))
  AND completed_at < CAST(:before AS timestamptz)
  AND (CAST(:job_type AS text) IS NULL OR job_type = CAST(:job_type AS text))
GROUP BY job_type, status ORDER BY job_type, status`;
