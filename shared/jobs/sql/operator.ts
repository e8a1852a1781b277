import { JOB_STATUSES, type JobStatus } from '../model.js';
import { LEASE_GRACE_SECONDS } from '../registry.js';

/**
 * The operator's statements: cancel, retry, show, list, the queue's state and activity, stats, retention.
 * The console's filtered statements are built from a filter's shape (`JobFilterShape`): the only SQL here
 * that varies.
 */

/**
 * An operator stops a job that has not finished. A running attempt is closed; its late report is fenced out.
 * `current` locks the row (FOR UPDATE), so a cancel that waited on a concurrent claim or report reads the row
 * as that statement left it: without the lock it would read the statement's snapshot (say `pending`) while
 * the update hits the newer `running` row, and the attempt the claim started would never be closed.
 */
export const cancelJobSql = `
WITH current AS (
  SELECT j.id, j.attempts, j.status AS was, j.started_at AS run_started_at,
         COALESCE(j.claimed_at, j.lease_expires_at - make_interval(secs => j.lease_seconds))
           AS attempt_claimed_at
  FROM jobs j WHERE j.id = CAST(:id AS uuid)
  FOR UPDATE
), cancelled AS (
  UPDATE jobs j
  SET status = 'cancelled', completed_at = COALESCE(CAST(:now AS timestamptz), now()),
      updated_at = COALESCE(CAST(:now AS timestamptz), now()),
      last_error = COALESCE(CAST(:reason AS text), 'cancelled by an operator')
  FROM current c
  WHERE j.id = c.id AND j.status IN ('pending', 'retrying', 'running')
  RETURNING j.*, c.was, c.run_started_at, c.attempt_claimed_at
), closed AS (
  INSERT INTO job_execution_records (job_id, attempt, claimed_at, started_at, finished_at, outcome,
                                     error, duration_ms)
  SELECT e.id, e.attempts, e.claimed_at, e.run_started_at, COALESCE(CAST(:now AS timestamptz), now()),
         e.outcome, e.error,
         COALESCE(e.duration_ms,
                  (extract(epoch FROM COALESCE(CAST(:now AS timestamptz), now())
                                      - COALESCE(e.run_started_at, e.claimed_at)) * 1000)::integer)
  FROM (SELECT id, attempts, attempt_claimed_at AS claimed_at, run_started_at, 'cancelled'::text AS outcome,
               'cancelled by an operator'::text AS error, NULL::integer AS duration_ms
        FROM cancelled WHERE was = 'running') e
)
SELECT id, job_type, payload, status, attempts, max_attempts, priority, idempotency_key, scheduled_at,
       started_at, completed_at, lease_expires_at, last_error, created_at, updated_at
FROM cancelled`;

/**
 * An operator puts a failed or cancelled job back in the queue, due now, with a fresh attempt budget.
 * `attempts` keeps counting (it is the fencing token); the backoff restarts from 2 minutes.
 */
export const retryJobSql = `
WITH retried AS (
  UPDATE jobs
  SET status = 'pending', scheduled_at = COALESCE(CAST(:now AS timestamptz), now()), completed_at = NULL,
      started_at = NULL, max_attempts = attempts + :budget, attempt_offset = attempts,
      updated_at = COALESCE(CAST(:now AS timestamptz), now())
  WHERE id = CAST(:id AS uuid) AND status IN ('failed', 'cancelled')
  RETURNING id, job_type, payload, status, attempts, max_attempts, priority, idempotency_key, scheduled_at,
            started_at, completed_at, lease_expires_at, last_error, created_at, updated_at
), woken AS (
  SELECT pg_notify('lana_jobs', '') FROM (SELECT 1 FROM retried) AS any_retried
)
-- A SELECT in WITH runs only if referenced: the count makes the notification happen.
SELECT retried.* FROM retried, (SELECT count(*) FROM woken) AS notified`;

/**
 * As `retryJobSql`, with a new payload (:payload, validated by the caller against the type's schema, and
 * the concurrency key read from it, :concurrency_key): the
 * payload the job had is kept in `job_payload_changes` with who changed it (:changed_by) and when, in the
 * same statement, so a replay never loses what the job was first asked to do.
 */
export const retryJobWithPayloadSql = `
WITH previous AS (
  SELECT id, payload FROM jobs WHERE id = CAST(:id AS uuid) AND status IN ('failed', 'cancelled') FOR UPDATE
), retried AS (
  UPDATE jobs j
  SET status = 'pending', scheduled_at = COALESCE(CAST(:now AS timestamptz), now()), completed_at = NULL,
      started_at = NULL, max_attempts = j.attempts + :budget, attempt_offset = j.attempts,
      updated_at = COALESCE(CAST(:now AS timestamptz), now()), payload = CAST(:payload AS jsonb),
      concurrency_key = CAST(:concurrency_key AS text)
  FROM previous p
  WHERE j.id = p.id
  RETURNING j.id, j.job_type, j.payload, j.status, j.attempts, j.max_attempts, j.priority, j.idempotency_key,
            j.scheduled_at, j.started_at, j.completed_at, j.lease_expires_at, j.last_error, j.created_at,
            j.updated_at, p.payload AS previous_payload
), recorded AS (
  INSERT INTO job_payload_changes (job_id, changed_at, changed_by, previous_payload, payload)
  SELECT id, COALESCE(CAST(:now AS timestamptz), now()), CAST(:changed_by AS text), previous_payload, payload
  FROM retried
  RETURNING 1
), woken AS (
  SELECT pg_notify('lana_jobs', '') FROM (SELECT 1 FROM retried) AS any_retried
)
SELECT r.id, r.job_type, r.payload, r.status, r.attempts, r.max_attempts, r.priority, r.idempotency_key,
       r.scheduled_at, r.started_at, r.completed_at, r.lease_expires_at, r.last_error, r.created_at, r.updated_at
FROM retried r, (SELECT count(*) FROM woken) AS notified, (SELECT count(*) FROM recorded) AS kept`;

/** A job's payload changes (replays with a new payload), oldest first. */
export const payloadChangesByJobSql = `
SELECT changed_at, changed_by, previous_payload::text AS previous_payload, payload::text AS payload
FROM job_payload_changes WHERE job_id = CAST(:id AS uuid) ORDER BY id`;

/** One job by id. */
export const jobByIdSql = `
SELECT id, job_type, payload, status, attempts, max_attempts, priority, idempotency_key, scheduled_at,
       started_at, completed_at, lease_expires_at, last_error, created_at, updated_at
FROM jobs WHERE id = CAST(:id AS uuid)`;

/** Finished attempts, plus the one in progress (from the job row, with no outcome yet). */
export const executionsByJobSql = `
SELECT job_id, attempt, claimed_at, started_at, finished_at, outcome, error, duration_ms
FROM job_executions WHERE job_id = CAST(:id AS uuid)
UNION ALL
SELECT j.id, j.attempts, COALESCE(j.claimed_at, j.lease_expires_at - make_interval(secs => j.lease_seconds)),
  j.started_at, NULL, NULL, NULL, NULL
FROM jobs j WHERE j.id = CAST(:id AS uuid) AND j.status = 'running'
ORDER BY attempt`;

/**
 * Newest first, optionally filtered by status and type. Ids are UUID v7 that begin with their creation
 * time (the enqueuing process's clock, to the millisecond), so the primary key (or, for failed jobs,
 * `jobs_failed_idx`) read backwards gives the order: a listing reads the rows it shows and those its filter
 * skips, not the whole history sorted by `created_at`.
 */
export const listJobsSql = `
SELECT id, job_type, payload, status, attempts, max_attempts, priority, idempotency_key, scheduled_at,
       started_at, completed_at, lease_expires_at, last_error, created_at, updated_at
FROM jobs
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
WITH RECURSIVE ready_priorities AS (
  (SELECT priority, scheduled_at FROM jobs WHERE status IN ('pending', 'retrying')
   ORDER BY priority, scheduled_at LIMIT 1)
  UNION ALL
  SELECT n.priority, n.scheduled_at FROM ready_priorities e CROSS JOIN LATERAL (
    SELECT priority, scheduled_at FROM jobs WHERE status IN ('pending', 'retrying') AND priority > e.priority
    ORDER BY priority, scheduled_at LIMIT 1) n
), due AS (
  SELECT r.scheduled_at AS oldest, d.n FROM ready_priorities r CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM jobs
    WHERE status IN ('pending', 'retrying') AND priority = r.priority
      AND scheduled_at <= COALESCE(CAST(:now AS timestamptz), now())) d
  WHERE r.scheduled_at <= COALESCE(CAST(:now AS timestamptz), now())
)
SELECT COALESCE(sum(n), 0)::integer AS depth,
       COALESCE(extract(epoch FROM COALESCE(CAST(:now AS timestamptz), now()) - min(oldest)), 0)::float8
         AS oldest_ready_age_seconds
FROM due`;

/**
 * Once a minute (fetch-ready's scheduled run): jobs created in the last minute by any path (the CLI,
 * application code, executors, raw SQL), read as a primary-key range (ids begin with their creation
 * time), and attempts still running past their type's timeout (long-running jobs, before their lease
 * expires), through the running index. Each reads what it counts.
 */
export const queueActivitySql = `
SELECT (SELECT count(*) FROM jobs
        WHERE id >= lana_uuid_v7_floor(COALESCE(CAST(:now AS timestamptz), now()) - interval '2 minutes')
          AND created_at > COALESCE(CAST(:now AS timestamptz), now()) - interval '1 minute'
          AND created_at <= COALESCE(CAST(:now AS timestamptz), now()))::integer
         AS enqueued_last_minute,
       (SELECT count(*) FROM jobs
        WHERE status = 'running' AND lease_expires_at IS NOT NULL AND started_at IS NOT NULL
          AND started_at + make_interval(secs => lease_seconds - ${LEASE_GRACE_SECONDS})
              < COALESCE(CAST(:now AS timestamptz), now()))::integer
         AS running_past_timeout`;

/**
 * The earliest time a ready job becomes due (for a worker deciding how long it may sleep). While a type is
 * paused (migration 0015), due jobs may be paused ones no claim takes, so the answer is then the earliest
 * job scheduled after now (one range read per priority): a worker does not poll again and again for them.
 */
export const nextDueAtSql = `
WITH RECURSIVE earliest AS (
  (SELECT priority, scheduled_at FROM jobs WHERE status IN ('pending', 'retrying')
   ORDER BY priority, scheduled_at LIMIT 1)
  UNION ALL
  SELECT n.priority, n.scheduled_at FROM earliest e CROSS JOIN LATERAL (
    SELECT priority, scheduled_at FROM jobs WHERE status IN ('pending', 'retrying') AND priority > e.priority
    ORDER BY priority, scheduled_at LIMIT 1) n
)
SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM job_type_pauses) THEN (SELECT min(scheduled_at) FROM earliest)
       ELSE (SELECT min(ahead.scheduled_at) FROM earliest r CROSS JOIN LATERAL (
               SELECT scheduled_at FROM jobs
               WHERE status IN ('pending', 'retrying') AND priority = r.priority
                 AND scheduled_at > COALESCE(CAST(:now AS timestamptz), now())
               ORDER BY scheduled_at
               LIMIT 1) ahead)
       END AS next_due_at`;

/** Attempts finished in the last :window_seconds, by outcome (failure rate over the last hour). */
export const recentOutcomesSql = `
SELECT j.job_type, e.outcome, count(*)::integer AS count,
       COALESCE(avg(e.duration_ms), 0)::float8 AS avg_duration_ms,
       COALESCE(max(e.duration_ms), 0)::integer AS max_duration_ms
FROM job_executions e JOIN jobs j ON j.id = e.job_id
WHERE e.finished_at >= COALESCE(CAST(:now AS timestamptz), now()) - make_interval(secs => :window_seconds)
GROUP BY j.job_type, e.outcome
ORDER BY j.job_type, e.outcome`;

/** Running attempts older than their lease (the long-running-jobs signal). */
export const overdueRunningSql = `
SELECT count(*)::integer AS overdue FROM jobs
WHERE status = 'running' AND lease_expires_at < COALESCE(CAST(:now AS timestamptz), now())`;

/**
 * Retention: deletes up to :batch finished jobs of the given statuses (a JSON list) whose completion is
 * older than :before, with their execution records (a completed attempt's is the job row itself) and
 * payload changes. Bounded, so each call is a short transaction; callers loop until it returns fewer than
 * :batch.
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
  DELETE FROM job_execution_records e USING doomed d WHERE e.job_id = d.id
), payload_changes AS (
  DELETE FROM job_payload_changes c USING doomed d WHERE c.job_id = d.id
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

/**
 * Which predicates a console filter uses. Each combination is its own statement text, so every one gets a
 * plan on its own index (a `(:x IS NULL OR col = :x)` predicate would leave a cached generic plan on none).
 */
export interface JobFilterShape {
  /**
   * A status to match, written into the statement as a literal (it is one of six constants): so a plan,
   * even a generic one, can use the partial indexes keyed by status.
   */
  status: JobStatus | null;
  jobType: boolean;
  key: boolean;
  /** Created at or after :created_from (a primary-key range: ids begin with their creation time). */
  from: boolean;
  /** Created before :created_to. */
  to: boolean;
}

export function jobFilterSql(shape: JobFilterShape, alias = 'jobs'): string {
  const p: string[] = [];
  if (shape.status !== null) {
    if (!JOB_STATUSES.includes(shape.status)) throw new Error(`not a job status: ${String(shape.status)}`);
    p.push(`${alias}.status = '${shape.status}'`);
    // Always true of a running job (a claim sets the lease): lets a plan read `jobs_running_lease_idx`.
    if (shape.status === 'running') p.push(`${alias}.lease_expires_at IS NOT NULL`);
  }
  if (shape.jobType) p.push(`${alias}.job_type = CAST(:job_type AS text)`);
  if (shape.key) p.push(`${alias}.idempotency_key = CAST(:idempotency_key AS text)`);
  if (shape.from) p.push(`${alias}.id >= lana_uuid_v7_floor(CAST(:created_from AS timestamptz))`);
  if (shape.to) p.push(`${alias}.id < lana_uuid_v7_floor(CAST(:created_to AS timestamptz))`);
  return p.length === 0 ? 'TRUE' : p.join(' AND ');
}

/**
 * A page of jobs, newest first, after the keyset cursor :before (an id; absent for the first page). Read
 * backwards on the primary key (unfiltered, a time range, or a status that is mostly among the newest
 * jobs: completed, pending, retrying, running), `jobs_failed_idx`, `jobs_cancelled_idx`, `jobs_type_id_idx`
 * (with the running ones beside it) or `jobs_key_id_idx` (migrations 0010, 0017): a page reads its rows and
 * what its filter skips, never OFFSET.
 */
export function jobsPageSql(shape: JobFilterShape, withCursor: boolean): string {
  const cursor = withCursor ? ' AND id < CAST(:before AS uuid)' : '';
  const columns = `id, job_type, payload, status, attempts, max_attempts, priority, idempotency_key, scheduled_at,
       started_at, completed_at, lease_expires_at, last_error, created_at, updated_at`;
  if (shape.jobType && shape.status === null && !shape.key) {
    // `jobs_type_id_idx` leaves running jobs out (a claim adds no entry to it, migration 0017): a type's
    // page merges its other jobs, read backwards on that index, with its running ones, read through
    // `jobs_running_lease_idx` (a running job always has a lease).
    return `
SELECT ${columns} FROM (
  (SELECT ${columns} FROM jobs
   WHERE ${jobFilterSql(shape)} AND status <> 'running'${cursor}
   ORDER BY id DESC LIMIT :limit)
  UNION ALL
  (SELECT ${columns} FROM jobs
   WHERE ${jobFilterSql(shape)} AND status = 'running' AND lease_expires_at IS NOT NULL${cursor}
   ORDER BY id DESC LIMIT :limit)
) AS page
ORDER BY id DESC
LIMIT :limit`;
  }
  return `
SELECT ${columns}
FROM jobs
WHERE ${jobFilterSql(shape)}${cursor}
ORDER BY id DESC
LIMIT :limit`;
}

/** How many jobs of the filter a bulk action would change, counted up to :cap. */
export function countForBulkSql(shape: JobFilterShape, statuses: 'retryable' | 'cancellable'): string {
  const eligible =
    statuses === 'retryable' ? "('failed', 'cancelled')" : "('pending', 'retrying', 'running')";
  return `
SELECT count(*)::integer AS count FROM (
  SELECT 1 FROM jobs WHERE ${jobFilterSql(shape)} AND status IN ${eligible} LIMIT :cap
) AS matching`;
}

/**
 * Retries up to :limit failed or cancelled jobs of the filter, as `retryJobSql` does one: due now, a fresh
 * budget (:budgets maps a job type to its attempts; a type no longer registered keeps its own).
 */
export function bulkRetrySql(shape: JobFilterShape): string {
  return `
WITH chosen AS (
  SELECT id FROM jobs WHERE ${jobFilterSql(shape)} AND status IN ('failed', 'cancelled')
  ORDER BY id DESC LIMIT :limit
  FOR UPDATE SKIP LOCKED
), retried AS (
  UPDATE jobs j
  SET status = 'pending', scheduled_at = COALESCE(CAST(:now AS timestamptz), now()), completed_at = NULL,
      started_at = NULL,
      max_attempts = j.attempts
        + COALESCE(CAST(CAST(:budgets AS jsonb) ->> j.job_type AS integer), j.max_attempts),
      attempt_offset = j.attempts, updated_at = COALESCE(CAST(:now AS timestamptz), now())
  FROM chosen c WHERE j.id = c.id AND j.status IN ('failed', 'cancelled')
  RETURNING j.id
), woken AS (
  SELECT pg_notify('lana_jobs', '') FROM (SELECT 1 FROM retried LIMIT 1) AS any_retried
)
SELECT retried.id FROM retried, (SELECT count(*) FROM woken) AS notified`;
}

/**
 * Cancels up to :limit unfinished jobs of the filter, as `cancelJobSql` does one (running attempts closed).
 */
export function bulkCancelSql(shape: JobFilterShape): string {
  return `
WITH current AS (
  SELECT j.id, j.attempts, j.status AS was, j.started_at AS run_started_at,
         COALESCE(j.claimed_at, j.lease_expires_at - make_interval(secs => j.lease_seconds))
           AS attempt_claimed_at
  FROM jobs j WHERE ${jobFilterSql(shape, 'j')} AND j.status IN ('pending', 'retrying', 'running')
  ORDER BY j.id DESC LIMIT :limit
  FOR UPDATE
), cancelled AS (
  UPDATE jobs j
  SET status = 'cancelled', completed_at = COALESCE(CAST(:now AS timestamptz), now()),
      updated_at = COALESCE(CAST(:now AS timestamptz), now()),
      last_error = 'cancelled by an operator'
  FROM current c
  WHERE j.id = c.id AND j.status IN ('pending', 'retrying', 'running')
  RETURNING j.id, j.attempts, c.was, c.run_started_at, c.attempt_claimed_at
), closed AS (
  INSERT INTO job_execution_records (job_id, attempt, claimed_at, started_at, finished_at, outcome,
                                     error, duration_ms)
  SELECT e.id, e.attempts, e.claimed_at, e.run_started_at, COALESCE(CAST(:now AS timestamptz), now()),
         e.outcome, e.error,
         COALESCE(e.duration_ms,
                  (extract(epoch FROM COALESCE(CAST(:now AS timestamptz), now())
                                      - COALESCE(e.run_started_at, e.claimed_at)) * 1000)::integer)
  FROM (SELECT id, attempts, attempt_claimed_at AS claimed_at, run_started_at, 'cancelled'::text AS outcome,
               'cancelled by an operator'::text AS error, NULL::integer AS duration_ms
        FROM cancelled WHERE was = 'running') e
)
SELECT id FROM cancelled`;
}

/**
 * Failed and retrying jobs grouped by error message: a count and the newest example of each. Reads the
 * failed rows through `jobs_failed_idx` and the retrying ones through a queue index (one branch each, so
 * each can use its partial index): the failures and the queue, not the history.
 */
export const failureGroupsSql = `
SELECT last_error AS error, count(*)::integer AS count, max(id::text)::uuid AS newest_id,
       count(*) FILTER (WHERE status = 'failed')::integer AS failed,
       count(*) FILTER (WHERE status = 'retrying')::integer AS retrying
FROM (
  SELECT id, status, last_error FROM jobs WHERE status = 'failed'
  UNION ALL
  SELECT id, status, last_error FROM jobs WHERE status = 'retrying'
) AS failing
GROUP BY last_error
ORDER BY count(*) DESC, max(id::text) DESC
LIMIT :limit`;

/**
 * Counts by type and status without reading the history: the queue exactly, ready jobs through
 * `jobs_ready_idx` and running ones through `jobs_running_lease_idx` (a claim always sets the lease), and
 * finished jobs over the last :finished_window_seconds, a range of `jobs_finished_at_idx` (migration 0011).
 * One branch per index, each with that index's own predicate, so each plan can use it.
 */
export const countsByStatusAndTypeBoundedSql = `
SELECT job_type, status, count(*)::integer AS count FROM jobs
WHERE status IN ('pending', 'retrying')
GROUP BY job_type, status
UNION ALL
SELECT job_type, status, count(*)::integer AS count FROM jobs
WHERE status = 'running' AND lease_expires_at IS NOT NULL
GROUP BY job_type, status
UNION ALL
SELECT job_type, status, count(*)::integer AS count FROM jobs
WHERE status IN ('completed', 'failed', 'cancelled')
  AND completed_at >= COALESCE(CAST(:now AS timestamptz),
    now()) - make_interval(secs => :finished_window_seconds)
GROUP BY job_type, status
ORDER BY 1, 2`;

/** The job a schedule's tick enqueued (its idempotency key), through the unique key index. */
export const jobByKeySql = `
SELECT id, job_type, payload, status, attempts, max_attempts, priority, idempotency_key, scheduled_at,
       started_at, completed_at, lease_expires_at, last_error, created_at, updated_at
FROM jobs
WHERE job_type = CAST(:job_type AS text) AND idempotency_key = CAST(:idempotency_key AS text)`;
