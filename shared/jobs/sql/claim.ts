import { CLAIM_COLUMNS } from '../model.js';
import { NOW, readyPriorities } from './common.js';

/**
 * The claims: the plain claim (one statement walking the ready index priority by priority) and, when job
 * types have concurrency limits or a claim is for one type, the limited claim through
 * `lana_jobs_claim_limited` (migration 0007). Each comes as rows (drivers with a per-row limit), as one
 * JSON document, and in the local worker's form that also answers when the next waiting job is due.
 */

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
