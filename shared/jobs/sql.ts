/**
 * Every statement of the job lifecycle. One dialect (PostgreSQL 15), named parameters, no array
 * parameters (lists travel as one JSON document), explicit casts: the same text runs through node-postgres
 * and the RDS Data API. Each lifecycle step is ONE statement, because every Data API call autocommits.
 *
 * `:now` is the injectable clock: NULL means the database's own `now()`.
 */
import { CLAIM_COLUMNS, JOB_COLUMNS } from './model.js';
import { LEASE_GRACE_SECONDS } from './registry.js';

const NOW = 'COALESCE(CAST(:now AS timestamptz), now())';

const insertColumns = `id, job_type, payload, scheduled_at, max_attempts, backoff_base_seconds,
  backoff_cap_seconds, lease_seconds, priority, idempotency_key, created_at, updated_at`;
const insertValues = `r.id, r.job_type, CAST(r.payload AS jsonb), COALESCE(r.scheduled_at, ${NOW}), r.max_attempts,
  r.backoff_base_seconds, r.backoff_cap_seconds, r.lease_seconds, r.priority, r.idempotency_key, ${NOW}, ${NOW}`;
// The payload is taken as json and cast after: json_to_recordset building jsonb values itself costs twice as
// much, which is most of a bulk enqueue's server time.
const insertInput = `json_to_recordset(CAST(:rows AS json)) AS r(
  ord integer, id uuid, job_type text, payload json, scheduled_at timestamptz, max_attempts integer,
  backoff_base_seconds integer, backoff_cap_seconds integer, lease_seconds integer, priority integer,
  idempotency_key text)`;
const onKeyConflict = 'ON CONFLICT (job_type, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING';

/**
 * Inserts many jobs from one JSON array; rows whose (type, key) already exists are skipped. The caller
 * made each job's id and knows its input, so the answer is small whatever the batch size: a first row with
 * how many rows were inserted and their creation time (one instant: the statement's), then the ids of the
 * inserted keyed rows, up to 1,000 per row as a JSON array (under the Data API's 64 KB per row, and
 * 10,000 keyed jobs stay far under its 1 MiB per answer). Unkeyed rows are never skipped.
 */
export const insertJobsSql = `
WITH inserted AS (
  INSERT INTO jobs (${insertColumns})
  SELECT ${insertValues}
  FROM ${insertInput}
  ORDER BY r.ord
  ${onKeyConflict}
  RETURNING id, idempotency_key, created_at
), keyed AS (
  SELECT id, (row_number() OVER () - 1) / 1000 AS chunk FROM inserted WHERE idempotency_key IS NOT NULL
)
SELECT 0 AS part, (SELECT count(*) FROM inserted)::integer AS inserted,
       (SELECT min(created_at) FROM inserted) AS created_at, NULL::text AS keyed_ids
UNION ALL
SELECT (1 + chunk)::integer, NULL, NULL, json_agg(id)::text FROM keyed GROUP BY chunk
ORDER BY part`;

/** One job's row in plain parameters: the two one-row inserts below. */
const oneRowValues = `CAST(:id AS uuid), CAST(:job_type AS text), CAST(:payload AS jsonb),
  COALESCE(CAST(:scheduled_at AS timestamptz), ${NOW}), CAST(:max_attempts AS integer),
  CAST(:backoff_base_seconds AS integer), CAST(:backoff_cap_seconds AS integer),
  CAST(:lease_seconds AS integer), CAST(:priority AS integer), CAST(:idempotency_key AS text), ${NOW}, ${NOW}`;

/**
 * Inserts ONE job (the common case: an API request enqueues one), skipping it if its (type, key) exists:
 * no row comes back then. The same row as `insertJobsSql` makes, in plain parameters: unpacking a
 * one-element JSON array and building the batch answer cost the server about a third of a millisecond.
 */
export const insertJobSql = `
INSERT INTO jobs (${insertColumns})
VALUES (${oneRowValues})
${onKeyConflict}
RETURNING created_at`;

/**
 * Inserts ONE job already claimed and begun (attempt 1, running, leased from now): a local worker's eager
 * start, where the process that enqueues a due job has a free slot and runs it as soon as this commits.
 * One commit instead of an insert and a claim, and none of the other workers is woken for it (the insert
 * trigger notifies only for ready rows). A (type, key) that already exists is skipped, as in the insert.
 * It returns only the statement's time: the start and the lease follow from it (one instant per statement),
 * and every timestamp more to format and parse is a few hundredths of a millisecond on the eager path.
 */
export const insertStartedJobSql = `
INSERT INTO jobs (${insertColumns}, status, attempts, claimed_at, started_at, lease_expires_at)
VALUES (${oneRowValues},
  'running', 1, ${NOW}, ${NOW}, ${NOW} + make_interval(secs => CAST(:lease_seconds AS integer)))
${onKeyConflict}
RETURNING created_at`;

/**
 * An insert of no rows, which writes nothing (no transaction id, no WAL). A session's first insert into
 * `jobs` plans against every index, compiles the insert trigger and plans its check of the inserted rows:
 * about 8 ms on this project's machine, against 1 to 2 ms afterwards. Run once per session ahead of time
 * (`JobTracker.warmUp`), it spares the first job a worker starts that cost. Statement triggers fire for no
 * rows too.
 */
export const warmUpInsertSql = `
INSERT INTO jobs (id, job_type, payload)
SELECT CAST(NULL AS uuid), CAST(NULL AS text), CAST(NULL AS jsonb) WHERE false
${onKeyConflict}`;

/** The creation time of each of the given job ids that exists (:ids, one JSON array). */
export const jobsCreatedByIdSql = `
SELECT id::text AS id, created_at FROM jobs
WHERE id IN (SELECT CAST(value AS uuid) FROM json_array_elements_text(CAST(:ids AS json)))`;

/** The jobs already holding some (type, key) pairs. */
export const jobsByIdempotencyKeySql = `
SELECT ${JOB_COLUMNS} FROM jobs
WHERE (job_type, idempotency_key) IN (
  SELECT k.job_type, k.idempotency_key
  FROM jsonb_to_recordset(CAST(:keys AS jsonb)) AS k(job_type text, idempotency_key text))`;

/**
 * When the current attempt was claimed. Rows claimed before migration 0007 have no `claimed_at`: their
 * lease ran lease_seconds from the claim.
 */
const CLAIMED_AT = 'COALESCE(j.claimed_at, j.lease_expires_at - make_interval(secs => j.lease_seconds))';

/**
 * Claims due jobs: locks up to :limit ready rows in priority then due-time order (skipping rows another
 * claimer holds), sets them running with a lease and counts the attempt.
 * With :start_now the attempt also counts as begun (an in-process worker runs it at once); otherwise the
 * executor marks the start itself (`startAttemptSql`), which is how duplicate deliveries are recognised.
 *
 * The ready index leads with priority, so one scan for `scheduled_at <= now` in (priority, scheduled_at)
 * order would read every job scheduled ahead of a priority before reaching the next: a claim that comes
 * back short (an idle worker, an outage filling the queue with retries) would cost as much as the whole
 * waiting queue. Instead the claim walks the priorities that have ready jobs (one index descent each,
 * lowest first, giving each one's earliest job) and, for those whose earliest job is due, reads the due
 * jobs as a range that ends at the first job scheduled ahead. The
 * ranges are taken in the walk's order and only as far as :limit, so rows are locked in claim order and no
 * more than the claim keeps.
 *
 * The locked rows are updated by physical address (ctid): they cannot move while this statement holds
 * their locks, and a TID lookup skips one primary-key descent per job. The update states no status of its
 * own: the locking read already checked it on the row it locked, and a status test there would let the
 * planner find the rows by scanning `jobs_ready_idx` instead, which a plan cached while the queue was
 * nearly empty keeps doing when it holds 100,000 jobs (see `test/jobs/cached-plans.test.ts`).
 */
/**
 * The earliest ready job of each priority, lowest priority first, as a CTE named `name`: one index descent
 * per distinct priority (a loose scan of `jobs_ready_idx`), so it costs the same with a million jobs
 * scheduled ahead as with none; `min(scheduled_at)` over the ready rows would read all of them, the index
 * leading with priority.
 */
function earliestPerPrioritySql(name: string): string {
  const ready = `status IN ('pending', 'retrying')`;
  return `${name} AS (
  (SELECT priority, scheduled_at FROM jobs WHERE ${ready} ORDER BY priority, scheduled_at LIMIT 1)
  UNION ALL
  SELECT n.priority, n.scheduled_at FROM ${name} e CROSS JOIN LATERAL (
    SELECT priority, scheduled_at FROM jobs WHERE ${ready} AND priority > e.priority
    ORDER BY priority, scheduled_at LIMIT 1) n
)`;
}
const readyPriorities = earliestPerPrioritySql('ready_priorities');
const claimedLimitedTo = (limit: string) => `claimed AS (
UPDATE jobs j
SET status = 'running', attempts = j.attempts + 1, claimed_at = ${NOW},
    claim_token = CAST(:claim_token AS uuid),
    started_at = CASE WHEN :start_now THEN ${NOW} END,
    lease_expires_at = ${NOW} + make_interval(secs =>
      CASE WHEN :start_now THEN j.lease_seconds ELSE CAST(:dispatch_lease_seconds AS integer) END),
    updated_at = ${NOW}
WHERE j.ctid = ANY(ARRAY(
  SELECT due.ctid FROM ready_priorities r CROSS JOIN LATERAL (
    SELECT ctid FROM jobs
    WHERE status IN ('pending', 'retrying') AND priority = r.priority AND scheduled_at <= ${NOW}
    ORDER BY scheduled_at, id
    LIMIT ${limit}
    FOR UPDATE SKIP LOCKED) due
  WHERE r.scheduled_at <= ${NOW}
  LIMIT ${limit}))
RETURNING ${CLAIM_COLUMNS}
)`;
const claimed = claimedLimitedTo(':limit');
const claimedCte = `WITH RECURSIVE ${readyPriorities}, ${claimed}`;

/**
 * The jobs a claim with this :claim_token already took: the same claim sent again by a driver whose
 * answer was lost after the commit. It then answers with them and claims nothing more.
 */
const priorClaim = `prior AS (
  SELECT ${CLAIM_COLUMNS} FROM jobs WHERE claim_token = CAST(:claim_token AS uuid) AND status = 'running'
)`;
const unlessResent = '(CASE WHEN EXISTS (SELECT 1 FROM prior) THEN 0 ELSE CAST(:limit AS integer) END)';

/**
 * The claim, one row per job (an UPDATE returns rows in physical order: hand them out in claim order),
 * for drivers with a per-row limit; a resent claim answers with its first run's jobs.
 */
export const claimDueJobsSql = `WITH RECURSIVE ${readyPriorities}, ${priorClaim}, ${claimedLimitedTo(unlessResent)}
SELECT * FROM (SELECT * FROM prior UNION ALL SELECT * FROM claimed) c ORDER BY priority, scheduled_at, id`;

/** The claimed rows as ONE JSON document in claim order (see `claimDueJobsAsDocumentSql`). */
const claimedDocument = `COALESCE(json_agg(json_build_array(id, job_type, payload, attempts, max_attempts,
  priority, idempotency_key, scheduled_at, lease_expires_at) ORDER BY priority, scheduled_at, id), '[]')::text`;

/**
 * The claim as ONE JSON document, `[[id, type, payload, attempts, max_attempts, priority, key,
 * scheduled_at, lease_expires_at], ...]` in claim order: decoding one document costs a worker a
 * third of decoding nine columns per row. Not for drivers with a per-row size limit (the Data API's 64 KB).
 */
export const claimDueJobsAsDocumentSql = `${claimedCte}
SELECT ${claimedDocument} AS jobs FROM claimed`;

/**
 * The local worker's claim: the document above and, for a claim that came back short (fewer than :limit),
 * when the next job it left becomes due (NULL when none), so an idle worker knows how long it may sleep
 * without asking in a second statement. A short claim took every due job it could lock, so that is the
 * first job scheduled after now, one range read per priority that has ready jobs. (Due jobs another
 * claimer holds are that claimer's; the claimed rows, which still look ready to this statement, are due,
 * so the range passes them by without a test.)
 */
export const claimDueJobsForWorkerSql = `
WITH RECURSIVE ${readyPriorities}, ${claimed}
SELECT ${claimedDocument} AS jobs,
  CASE WHEN count(*) < :limit THEN (
    SELECT min(ahead.scheduled_at) FROM ready_priorities r CROSS JOIN LATERAL (
      SELECT scheduled_at FROM jobs
      WHERE status IN ('pending', 'retrying') AND priority = r.priority AND scheduled_at > ${NOW}
      ORDER BY scheduled_at
      LIMIT 1) ahead
  ) END AS next_due_at
FROM claimed`;

/**
 * The claim when job types have concurrency limits, or for one type only (:only_type): the same jobs
 * in the same order as the plain claim, each limited type taking at most its free slots
 * (`lana_jobs_claim_limited`, migration 0007, says how that holds across concurrent claimers).
 */
const claimedLimitedBy = (limit: string) => `claimed AS (
  SELECT * FROM lana_jobs_claim_limited(CAST(:limits AS jsonb), CAST(:only_type AS text),
    ${limit}, ${NOW}, CAST(:start_now AS boolean), CAST(:dispatch_lease_seconds AS integer),
    CAST(:claim_token AS uuid))
)`;
const claimedLimited = claimedLimitedBy('CAST(:limit AS integer)');

/** The limited claim, one row per job, in claim order; a resent claim answers with its first run's jobs. */
export const claimLimitedSql = `WITH ${priorClaim}, ${claimedLimitedBy(unlessResent)}
SELECT * FROM (SELECT * FROM prior UNION ALL SELECT ${CLAIM_COLUMNS} FROM claimed) c
ORDER BY priority, scheduled_at, id`;

/** The limited claim as one JSON document (see `claimDueJobsAsDocumentSql`). */
export const claimLimitedAsDocumentSql = `WITH ${claimedLimited}
SELECT ${claimedDocument} AS jobs FROM claimed`;

/**
 * The local worker's limited claim: the document, and for a short claim when the next waiting job is due
 * and whether due jobs were left behind (a type at its limit, or rows another claimer held): the worker
 * then asks again soon instead of sleeping until the next due time.
 */
export const claimLimitedForWorkerSql = `
WITH RECURSIVE ${readyPriorities}, ${claimedLimited}
SELECT ${claimedDocument} AS jobs,
  CASE WHEN count(*) < :limit THEN (
    SELECT min(ahead.scheduled_at) FROM ready_priorities r CROSS JOIN LATERAL (
      SELECT scheduled_at FROM jobs
      WHERE status IN ('pending', 'retrying') AND priority = r.priority AND scheduled_at > ${NOW}
      ORDER BY scheduled_at
      LIMIT 1) ahead
  ) END AS next_due_at,
  CASE WHEN count(*) < :limit THEN EXISTS (
    SELECT 1 FROM ready_priorities r CROSS JOIN LATERAL (
      SELECT 1 FROM jobs
      WHERE status IN ('pending', 'retrying') AND priority = r.priority AND scheduled_at <= ${NOW}
        AND id NOT IN (SELECT id FROM claimed)
      LIMIT 1) left_behind
    WHERE r.scheduled_at <= ${NOW}
  ) ELSE false END AS left_behind
FROM claimed`;

/**
 * Marks a claimed attempt as begun by its executor and renews its lease from the claim's short dispatch
 * lease to the run's (the type's timeout plus grace). Returns the job only for the first delivery of the
 * current attempt while its dispatch lease holds; a duplicate, a stale attempt, or an event that arrived
 * after the dispatch lease expired (the rescuer hands such a claim back, and a newer attempt may already
 * run) gets no row, so nothing runs.
 * :token is made per call: the same statement sent again by its driver (an answer lost after the commit)
 * finds its own token and gets the job again; another delivery brings another token.
 */
export const startAttemptSql = `
UPDATE jobs
SET lease_expires_at = CASE WHEN started_at IS NULL THEN ${NOW} + make_interval(secs => lease_seconds)
                            ELSE lease_expires_at END,
    started_at = COALESCE(started_at, ${NOW}), start_token = CAST(:token AS uuid), updated_at = ${NOW}
WHERE id = CAST(:id AS uuid) AND attempts = :attempt AND status = 'running'
  AND ((started_at IS NULL AND lease_expires_at > ${NOW}) OR start_token = CAST(:token AS uuid))
RETURNING ${JOB_COLUMNS}`;

/**
 * The execution row that closes an attempt, written once. `ended` must yield (id, attempts, claimed_at,
 * run_started_at, outcome, error, duration_ms); the duration falls back to the time since the start.
 */
function closeAttemptsSql(ended: string): string {
  return `
  INSERT INTO job_executions (job_id, attempt, claimed_at, started_at, finished_at, outcome, error, duration_ms)
  SELECT e.id, e.attempts, e.claimed_at, e.run_started_at, ${NOW}, e.outcome, e.error,
         COALESCE(e.duration_ms, (extract(epoch FROM ${NOW} - COALESCE(e.run_started_at, e.claimed_at)) * 1000)::integer)
  FROM ${ended} e`;
}

/**
 * The rows of a batch statement, looked up by primary key: `j.id = ANY(ARRAY(SELECT id FROM items))`
 * beside the join on `items`. The planner counts a JSON record set as 100 rows whatever it holds, and for
 * 100 it would rather read a table of up to some 25,000 jobs whole and hash-join it; it counts the array at
 * 10, for which the primary key wins on any table worth the name (`test/jobs/cached-plans.test.ts`).
 */
const idIn = (items: string) => `j.id = ANY(ARRAY(SELECT id FROM ${items}))`;

/**
 * Completes attempts in one statement. Fenced: only a row still running the given attempt changes, so an
 * executor whose lease expired cannot overwrite a newer attempt. Returns one JSON document listing the
 * attempts that applied, `[[id, job_type, duration_ms], ...]` (one value to decode instead of a row each).
 * :token (per call, or NULL) marks the rows this call completed: the same statement sent again after it
 * committed finds them and lists them as applied, where it would otherwise find them fenced out.
 */
export const completeAttemptsSql = `
WITH items AS (
  SELECT * FROM json_to_recordset(CAST(:items AS json)) AS x(id uuid, attempt integer, duration_ms integer)
), done AS (
  UPDATE jobs j
  SET status = 'completed', completed_at = ${NOW}, updated_at = ${NOW}, finish_token = CAST(:token AS uuid)
  FROM items x
  WHERE ${idIn('items')} AND j.id = x.id AND j.attempts = x.attempt AND j.status = 'running'
  -- The lease is left as it was (only enforced while running), so the claim time stays derivable here.
  RETURNING j.id, j.job_type, j.attempts, ${CLAIMED_AT} AS claimed_at, j.started_at AS run_started_at,
            x.duration_ms, 'completed'::text AS outcome, NULL::text AS error
), closed AS (${closeAttemptsSql('done')}
), resent AS (
  SELECT j.id, j.job_type, x.duration_ms FROM jobs j JOIN items x ON j.id = x.id
  WHERE ${idIn('items')} AND j.attempts = x.attempt AND j.status = 'completed'
    AND j.finish_token = CAST(:token AS uuid)
)
SELECT COALESCE(json_agg(json_build_array(id, job_type, duration_ms)), '[]')::text AS applied
FROM (SELECT id, job_type, duration_ms FROM done UNION ALL SELECT id, job_type, duration_ms FROM resent) a`;

/**
 * An executor's report and its next job in one statement: completes one attempt (fenced, as
 * `completeAttemptsSql`) and then claims the next due job of :only_type, begun at once, within the type's
 * concurrency limit (`lana_jobs_claim_limited`, which sees the completion: a volatile function sees the
 * changes its calling statement made before it, and the claim waits on `finished`, so the slot the
 * completion freed is free). Answers one row: whether the completion applied, and the next job's columns
 * (NULL when none). :token marks both, so a resent statement reports its first run's completion and
 * answers with the job that run claimed, and claims nothing more.
 */
export const completeAndClaimNextSql = `
WITH items AS (
  SELECT CAST(:id AS uuid) AS id, CAST(:attempt AS integer) AS attempt, CAST(:duration_ms AS integer) AS duration_ms
), done AS (
  UPDATE jobs j
  SET status = 'completed', completed_at = ${NOW}, updated_at = ${NOW}, finish_token = CAST(:token AS uuid)
  FROM items x
  WHERE j.id = x.id AND j.attempts = x.attempt AND j.status = 'running'
  RETURNING j.id, j.job_type, j.attempts, ${CLAIMED_AT} AS claimed_at, j.started_at AS run_started_at,
            x.duration_ms, 'completed'::text AS outcome, NULL::text AS error
), closed AS (${closeAttemptsSql('done')}
), resent AS (
  SELECT j.id FROM jobs j JOIN items x ON j.id = x.id
  WHERE j.attempts = x.attempt AND j.status = 'completed' AND j.finish_token = CAST(:token AS uuid)
), prior AS (
  SELECT ${CLAIM_COLUMNS} FROM jobs WHERE claim_token = CAST(:token AS uuid) AND status = 'running'
), finished AS (
  SELECT (SELECT count(*) FROM done) + (SELECT count(*) FROM resent) AS applied,
         (SELECT count(*) FROM prior) AS prior_claims
), next AS (
  SELECT * FROM prior
  UNION ALL
  SELECT ${CLAIM_COLUMNS} FROM finished f CROSS JOIN LATERAL lana_jobs_claim_limited(
    CAST(:limits AS jsonb), CAST(:only_type AS text), CASE WHEN f.prior_claims > 0 THEN 0 ELSE 1 END,
    ${NOW}, true, CAST(:dispatch_lease_seconds AS integer), CAST(:token AS uuid))
)
SELECT f.applied > 0 AS applied, n.*
FROM finished f LEFT JOIN next n ON true`;

/**
 * Fails attempts. `input` yields (id, attempt, error, retry_at, permanent, duration_ms, outcome). A failed attempt n becomes `retrying` at now + min(base * 2^n, cap) while
 * n < max_attempts (n counted since attempt_offset), else `failed`; a permanent failure fails at once; a
 * requested retry_at replaces the backoff. Fenced like completion.
 */
function failAttemptsSql(input: string): string {
  // A retry the executor asked for, or a run interrupted by a worker's shutdown, does not count as an
  // attempt: like a released claim it grows max_attempts and attempt_offset, so the job is never failed
  // for it and the backoff does not grow.
  const uncounted = "(NOT x.permanent AND x.outcome IN ('retry_requested', 'interrupted', 'undelivered'))";
  const givesUp = `(x.permanent OR (NOT ${uncounted} AND j.attempts >= j.max_attempts))`;
  return `
WITH input AS (${input}),
failed AS (
  UPDATE jobs j
  SET status = CASE WHEN ${givesUp} THEN 'failed'
                    WHEN x.outcome = 'undelivered' AND j.attempts - 1 <= j.attempt_offset THEN 'pending'
                    ELSE 'retrying' END,
      scheduled_at = CASE WHEN ${givesUp} THEN j.scheduled_at
        ELSE COALESCE(x.retry_at, ${NOW} + make_interval(secs =>
          LEAST(j.backoff_base_seconds * power(2, j.attempts - j.attempt_offset), j.backoff_cap_seconds)))
        END,
      max_attempts = j.max_attempts + CASE WHEN ${uncounted} THEN 1 ELSE 0 END,
      attempt_offset = j.attempt_offset + CASE WHEN ${uncounted} THEN 1 ELSE 0 END,
      completed_at = CASE WHEN ${givesUp} THEN ${NOW} END,
      last_error = x.error,
      updated_at = ${NOW},
      finish_token = CAST(:token AS uuid)
  FROM input x
  WHERE ${idIn('input')} AND j.id = x.id AND j.attempts = x.attempt AND j.status = 'running'
  RETURNING j.id, j.job_type, j.attempts, j.status, j.scheduled_at, x.error, x.outcome, x.duration_ms,
            ${CLAIMED_AT} AS claimed_at, j.started_at AS run_started_at
), closed AS (${closeAttemptsSql('failed')}
), resent AS (
  -- This call's own earlier run (:token), sent again after it committed: report what it did.
  SELECT j.id, j.job_type, j.attempts, j.status, j.scheduled_at, x.duration_ms, x.outcome
  FROM jobs j JOIN input x ON j.id = x.id
  WHERE ${idIn('input')} AND j.attempts = x.attempt AND j.status IN ('retrying', 'failed', 'pending')
    AND j.finish_token = CAST(:token AS uuid)
)
SELECT id, job_type, attempts, status, scheduled_at, duration_ms, outcome FROM failed
UNION ALL
SELECT id, job_type, attempts, status, scheduled_at, duration_ms, outcome FROM resent`;
}

export const failAttemptsFromInputSql = failAttemptsSql(`
  SELECT x.id, x.attempt, x.error, x.retry_at, COALESCE(x.permanent, false) AS permanent, x.duration_ms,
         COALESCE(x.outcome, 'failed') AS outcome
  FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS x(
    id uuid, attempt integer, error text, retry_at timestamptz, permanent boolean, duration_ms integer,
    outcome text)`);

/**
 * The rescuer: running jobs whose lease has expired. An attempt that began (its executor crashed, hung or
 * timed out) fails under the retry rule. A claim whose attempt never began (its event was lost, or reached
 * the executor after the dispatch lease, which the start then refused) is handed back, due at once, and
 * does not count as an attempt: it is recorded `undelivered`. Bounded per call; concurrent rescuers skip
 * each other's rows.
 */
export const rescueExpiredLeasesSql = failAttemptsSql(`
  SELECT j.id, j.attempts AS attempt,
         CASE WHEN j.started_at IS NULL
              THEN 'undelivered: no executor began the attempt before its dispatch lease expired'
              ELSE 'lease expired: the executor did not report within ' || j.lease_seconds || ' s' END AS error,
         CASE WHEN j.started_at IS NULL THEN ${NOW} END AS retry_at, false AS permanent,
         NULL::integer AS duration_ms,
         CASE WHEN j.started_at IS NULL THEN 'undelivered' ELSE 'lease_expired' END AS outcome
  FROM jobs j
  WHERE j.status = 'running' AND j.lease_expires_at < ${NOW}
  ORDER BY j.lease_expires_at
  LIMIT :limit
  FOR UPDATE SKIP LOCKED`);

/**
 * Hands back claims whose attempt never began (a fan-out that could not publish, a worker shutting down
 * with jobs still in its local queue), due again at once. The attempt number stays used (it is a fencing
 * token, never reissued) but does not count: max_attempts and attempt_offset grow with it. With
 * :require_unstarted, an attempt an executor already began is left alone.
 */
export const releaseClaimsSql = `
WITH items AS (
  SELECT * FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS x(id uuid, attempt integer)
), released AS (
  UPDATE jobs j
  SET status = CASE WHEN j.attempts - 1 > j.attempt_offset THEN 'retrying' ELSE 'pending' END,
      max_attempts = j.max_attempts + 1, attempt_offset = j.attempt_offset + 1,
      started_at = NULL, updated_at = ${NOW}
  FROM items x
  WHERE ${idIn('items')} AND j.id = x.id AND j.attempts = x.attempt AND j.status = 'running'
    AND (j.started_at IS NULL OR NOT :require_unstarted)
  -- RETURNING sees the new row: started_at is NULL now, so the begun time (if any) is not recorded.
  RETURNING j.id, j.attempts, ${CLAIMED_AT} AS claimed_at, NULL::timestamptz AS run_started_at,
            NULL::integer AS duration_ms, 'released'::text AS outcome, 'released unstarted'::text AS error
), closed AS (${closeAttemptsSql('released')}
), woken AS (
  SELECT pg_notify('lana_jobs', '') FROM (SELECT 1 FROM released LIMIT 1) AS any_released
)
-- A SELECT in WITH runs only if referenced: the count makes the notification happen.
SELECT id FROM released, (SELECT count(*) FROM woken) AS notified`;

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
