/**
 * The claims. The plain claim walks the ready index priority by priority in one statement; when job types
 * have concurrency limits, or a claim is for one type, the limited claim goes through
 * `lana_jobs_claim_limited` (migrations 0007 and 0012). Each comes in three answers: rows (for drivers with
 * a per-row size limit, the Data API's 64 KB), one JSON document (cheaper to decode), and the local
 * worker's document that also says when the next waiting job is due.
 *
 * `ready_priorities`, at the head of several statements, is the earliest ready job of each priority,
 * lowest priority first: one index descent per distinct priority (a loose scan of `jobs_ready_idx`), so it
 * costs the same with a million jobs scheduled ahead as with none, where `min(scheduled_at)` over the ready
 * rows would read all of them.
 */

/**
 * The plain claim, one row per claimed job in claim order; a resent claim answers with its first run's
 * jobs and claims nothing more. It locks up to :limit ready rows in priority then due-time order (skipping
 * rows another claimer holds), sets them running with a lease and counts the attempt. With :start_now the
 * attempt also counts as begun (an in-process worker runs it at once, leased for the run); otherwise it
 * holds a dispatch lease of :dispatch_lease_seconds and the executor marks the start itself
 * (`startAttemptSql`), which is how duplicate deliveries are recognised.
 *
 * - `prior`: the jobs a claim with this :claim_token already took, i.e. the same statement sent again by a
 *   driver whose answer was lost after the commit. Then the claim's limit is 0.
 * - The ready index leads with priority, so one scan for `scheduled_at <= now` in (priority, scheduled_at)
 *   order would read every job scheduled ahead of a priority before reaching the next: a claim that comes
 *   back short (an idle worker, an outage filling the queue with retries) would cost as much as the whole
 *   waiting queue. Instead the claim walks `ready_priorities` and, for the priorities whose earliest job is
 *   due, reads the due jobs as a range that ends at the first job scheduled ahead. The ranges are taken in
 *   the walk's order and only as far as the limit, so rows are locked in claim order and no more than the
 *   claim keeps.
 * - The locked rows are updated by physical address (ctid): they cannot move while this statement holds
 *   their locks, and a TID lookup skips one primary-key descent per job. The update states no status of
 *   its own: the locking read already checked it on the row it locked, and a status test there would let
 *   the planner find the rows by scanning `jobs_ready_idx` instead, which a plan cached while the queue was
 *   nearly empty keeps doing when it holds 100,000 jobs (`test/jobs/cached-plans.test.ts`).
 * - An UPDATE returns rows in physical order: the answer is sorted into claim order.
 */
export const claimDueJobsSql = `
WITH RECURSIVE ready_priorities AS (
  (SELECT priority, scheduled_at FROM jobs WHERE status IN ('pending', 'retrying')
   ORDER BY priority, scheduled_at LIMIT 1)
  UNION ALL
  SELECT n.priority, n.scheduled_at FROM ready_priorities e CROSS JOIN LATERAL (
    SELECT priority, scheduled_at FROM jobs WHERE status IN ('pending', 'retrying') AND priority > e.priority
    ORDER BY priority, scheduled_at LIMIT 1) n
), prior AS (
  SELECT id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at,
    lease_expires_at
  FROM jobs WHERE claim_token = CAST(:claim_token AS uuid) AND status = 'running'
), claimed AS (
  UPDATE jobs j
  SET status = 'running', attempts = j.attempts + 1, claimed_at = COALESCE(CAST(:now AS timestamptz), now()),
      claim_token = CAST(:claim_token AS uuid),
      started_at = CASE WHEN :start_now THEN COALESCE(CAST(:now AS timestamptz), now()) END,
      lease_expires_at = COALESCE(CAST(:now AS timestamptz), now()) + make_interval(secs =>
        CASE WHEN :start_now THEN j.lease_seconds ELSE CAST(:dispatch_lease_seconds AS integer) END),
      updated_at = COALESCE(CAST(:now AS timestamptz), now())
  WHERE j.ctid = ANY(ARRAY(
    SELECT due.ctid FROM ready_priorities r CROSS JOIN LATERAL (
      SELECT ctid FROM jobs
      WHERE status IN ('pending', 'retrying') AND priority = r.priority
        AND scheduled_at <= COALESCE(CAST(:now AS timestamptz), now())
      ORDER BY scheduled_at, id
      LIMIT (CASE WHEN EXISTS (SELECT 1 FROM prior) THEN 0 ELSE CAST(:limit AS integer) END)
      FOR UPDATE SKIP LOCKED) due
    WHERE r.scheduled_at <= COALESCE(CAST(:now AS timestamptz), now())
    LIMIT (CASE WHEN EXISTS (SELECT 1 FROM prior) THEN 0 ELSE CAST(:limit AS integer) END)))
  RETURNING id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at,
    lease_expires_at
)
SELECT * FROM (SELECT * FROM prior UNION ALL SELECT * FROM claimed) c ORDER BY priority, scheduled_at, id`;

/**
 * The plain claim (as `claimDueJobsSql`, without the resend check: only drivers that never resend use it)
 * answered as ONE JSON document in claim order, `[[id, type, payload, attempts, max_attempts, priority,
 * key, scheduled_at, lease_expires_at], ...]`: decoding one document costs a worker a third of decoding
 * nine columns per row. Not for drivers with a per-row size limit.
 */
export const claimDueJobsAsDocumentSql = `
WITH RECURSIVE ready_priorities AS (
  (SELECT priority, scheduled_at FROM jobs WHERE status IN ('pending', 'retrying')
   ORDER BY priority, scheduled_at LIMIT 1)
  UNION ALL
  SELECT n.priority, n.scheduled_at FROM ready_priorities e CROSS JOIN LATERAL (
    SELECT priority, scheduled_at FROM jobs WHERE status IN ('pending', 'retrying') AND priority > e.priority
    ORDER BY priority, scheduled_at LIMIT 1) n
), claimed AS (
  UPDATE jobs j
  SET status = 'running', attempts = j.attempts + 1, claimed_at = COALESCE(CAST(:now AS timestamptz), now()),
      claim_token = CAST(:claim_token AS uuid),
      started_at = CASE WHEN :start_now THEN COALESCE(CAST(:now AS timestamptz), now()) END,
      lease_expires_at = COALESCE(CAST(:now AS timestamptz), now()) + make_interval(secs =>
        CASE WHEN :start_now THEN j.lease_seconds ELSE CAST(:dispatch_lease_seconds AS integer) END),
      updated_at = COALESCE(CAST(:now AS timestamptz), now())
  WHERE j.ctid = ANY(ARRAY(
    SELECT due.ctid FROM ready_priorities r CROSS JOIN LATERAL (
      SELECT ctid FROM jobs
      WHERE status IN ('pending', 'retrying') AND priority = r.priority
        AND scheduled_at <= COALESCE(CAST(:now AS timestamptz), now())
      ORDER BY scheduled_at, id
      LIMIT :limit
      FOR UPDATE SKIP LOCKED) due
    WHERE r.scheduled_at <= COALESCE(CAST(:now AS timestamptz), now())
    LIMIT :limit))
  RETURNING id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at,
    lease_expires_at
)
SELECT COALESCE(json_agg(json_build_array(id, job_type, payload, attempts, max_attempts,
         priority, idempotency_key, scheduled_at, lease_expires_at) ORDER BY priority, scheduled_at, id),
           '[]')::text
       AS jobs
FROM claimed`;

/**
 * The local worker's claim: the document of `claimDueJobsAsDocumentSql` and, for a claim that came back
 * short (fewer than :limit), when the next job it left becomes due (NULL when none), so an idle worker
 * knows how long it may sleep without asking in a second statement. A short claim took every due job it
 * could lock, so that is the first job scheduled after now: one range read per priority that has ready
 * jobs. (Due jobs another claimer holds are that claimer's; the claimed rows, which still look ready to
 * this statement, are due, so the range passes them by without a test.)
 */
export const claimDueJobsForWorkerSql = `
WITH RECURSIVE ready_priorities AS (
  (SELECT priority, scheduled_at FROM jobs WHERE status IN ('pending', 'retrying')
   ORDER BY priority, scheduled_at LIMIT 1)
  UNION ALL
  SELECT n.priority, n.scheduled_at FROM ready_priorities e CROSS JOIN LATERAL (
    SELECT priority, scheduled_at FROM jobs WHERE status IN ('pending', 'retrying') AND priority > e.priority
    ORDER BY priority, scheduled_at LIMIT 1) n
), claimed AS (
  UPDATE jobs j
  SET status = 'running', attempts = j.attempts + 1, claimed_at = COALESCE(CAST(:now AS timestamptz), now()),
      claim_token = CAST(:claim_token AS uuid),
      started_at = CASE WHEN :start_now THEN COALESCE(CAST(:now AS timestamptz), now()) END,
      lease_expires_at = COALESCE(CAST(:now AS timestamptz), now()) + make_interval(secs =>
        CASE WHEN :start_now THEN j.lease_seconds ELSE CAST(:dispatch_lease_seconds AS integer) END),
      updated_at = COALESCE(CAST(:now AS timestamptz), now())
  WHERE j.ctid = ANY(ARRAY(
    SELECT due.ctid FROM ready_priorities r CROSS JOIN LATERAL (
      SELECT ctid FROM jobs
      WHERE status IN ('pending', 'retrying') AND priority = r.priority
        AND scheduled_at <= COALESCE(CAST(:now AS timestamptz), now())
      ORDER BY scheduled_at, id
      LIMIT :limit
      FOR UPDATE SKIP LOCKED) due
    WHERE r.scheduled_at <= COALESCE(CAST(:now AS timestamptz), now())
    LIMIT :limit))
  RETURNING id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at,
    lease_expires_at
)
SELECT COALESCE(json_agg(json_build_array(id, job_type, payload, attempts, max_attempts,
         priority, idempotency_key, scheduled_at, lease_expires_at) ORDER BY priority, scheduled_at, id),
           '[]')::text
       AS jobs,
       CASE WHEN count(*) < :limit THEN (
         SELECT min(ahead.scheduled_at) FROM ready_priorities r CROSS JOIN LATERAL (
           SELECT scheduled_at FROM jobs
           WHERE status IN ('pending', 'retrying') AND priority = r.priority
             AND scheduled_at > COALESCE(CAST(:now AS timestamptz), now())
           ORDER BY scheduled_at
           LIMIT 1) ahead
       ) END AS next_due_at
FROM claimed`;

/**
 * The limited claim, one row per job in claim order: at most each limited type's free slots (:limits,
 * `{"type": max running}`), or only :only_type's jobs. Priorities go first across types; within one
 * priority, types take turns by their earliest due job (`lana_jobs_claim_limited` says how the limits
 * hold across concurrent claimers). A resent claim (`prior`, as in `claimDueJobsSql`) answers with its
 * first run's jobs and claims nothing more.
 */
export const claimLimitedSql = `
WITH prior AS (
  SELECT id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at,
    lease_expires_at
  FROM jobs WHERE claim_token = CAST(:claim_token AS uuid) AND status = 'running'
), claimed AS (
  SELECT * FROM lana_jobs_claim_limited(CAST(:limits AS jsonb), CAST(:only_type AS text),
    (CASE WHEN EXISTS (SELECT 1 FROM prior) THEN 0 ELSE CAST(:limit AS integer) END),
    COALESCE(CAST(:now AS timestamptz), now()), CAST(:start_now AS boolean),
    CAST(:dispatch_lease_seconds AS integer), CAST(:claim_token AS uuid))
)
SELECT * FROM (
  SELECT * FROM prior
  UNION ALL
  SELECT id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at,
    lease_expires_at
  FROM claimed
) c
ORDER BY priority, scheduled_at, id`;

/** The limited claim (`claimLimitedSql`, without the resend check) as one JSON document in claim order. */
export const claimLimitedAsDocumentSql = `
WITH claimed AS (
  SELECT * FROM lana_jobs_claim_limited(CAST(:limits AS jsonb), CAST(:only_type AS text),
    CAST(:limit AS integer),
    COALESCE(CAST(:now AS timestamptz), now()), CAST(:start_now AS boolean),
    CAST(:dispatch_lease_seconds AS integer), CAST(:claim_token AS uuid))
)
SELECT COALESCE(json_agg(json_build_array(id, job_type, payload, attempts, max_attempts,
         priority, idempotency_key, scheduled_at, lease_expires_at) ORDER BY priority, scheduled_at, id),
           '[]')::text
       AS jobs
FROM claimed`;

/**
 * The local worker's limited claim: the document, and for a short claim when the next waiting job is due
 * (as in `claimDueJobsForWorkerSql`) and whether due jobs were left behind (a type at its limit, or rows
 * another claimer held): the worker then asks again soon instead of sleeping until the next due time.
 */
export const claimLimitedForWorkerSql = `
WITH RECURSIVE ready_priorities AS (
  (SELECT priority, scheduled_at FROM jobs WHERE status IN ('pending', 'retrying')
   ORDER BY priority, scheduled_at LIMIT 1)
  UNION ALL
  SELECT n.priority, n.scheduled_at FROM ready_priorities e CROSS JOIN LATERAL (
    SELECT priority, scheduled_at FROM jobs WHERE status IN ('pending', 'retrying') AND priority > e.priority
    ORDER BY priority, scheduled_at LIMIT 1) n
), claimed AS (
  SELECT * FROM lana_jobs_claim_limited(CAST(:limits AS jsonb), CAST(:only_type AS text),
    CAST(:limit AS integer),
    COALESCE(CAST(:now AS timestamptz), now()), CAST(:start_now AS boolean),
    CAST(:dispatch_lease_seconds AS integer), CAST(:claim_token AS uuid))
)
SELECT COALESCE(json_agg(json_build_array(id, job_type, payload, attempts, max_attempts,
         priority, idempotency_key, scheduled_at, lease_expires_at) ORDER BY priority, scheduled_at, id),
           '[]')::text
       AS jobs,
       CASE WHEN count(*) < :limit THEN (
         SELECT min(ahead.scheduled_at) FROM ready_priorities r CROSS JOIN LATERAL (
           SELECT scheduled_at FROM jobs
           WHERE status IN ('pending', 'retrying') AND priority = r.priority
             AND scheduled_at > COALESCE(CAST(:now AS timestamptz), now())
           ORDER BY scheduled_at
           LIMIT 1) ahead
       ) END AS next_due_at,
       CASE WHEN count(*) < :limit THEN EXISTS (
         SELECT 1 FROM ready_priorities r CROSS JOIN LATERAL (
           SELECT 1 FROM jobs
           WHERE status IN ('pending', 'retrying') AND priority = r.priority
             AND scheduled_at <= COALESCE(CAST(:now AS timestamptz), now())
             AND id NOT IN (SELECT id FROM claimed)
           LIMIT 1) left_behind
         WHERE r.scheduled_at <= COALESCE(CAST(:now AS timestamptz), now())
       ) ELSE false END AS left_behind
FROM claimed`;
