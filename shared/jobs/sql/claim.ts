/**
 * The claims. The plain claim walks the ready index priority by priority in one statement; when job types
 * have concurrency limits, or a claim is for one type, the limited claim goes through
 * `lana_jobs_claim_slotted` (migrations 0013, 0015 and 0016: slot rows taken with SKIP LOCKED, paused types
 * and rate limits left out, its walk bounded under a generic plan). Each comes in three answers: rows (for drivers with
 * a per-row size limit, the Data API's 64 KB), one JSON document (cheaper to decode), and the local
 * worker's document that also says when the next waiting job is due.
 *
 * `ready_priorities`, at the head of several statements, is the earliest ready job of each priority,
 * lowest priority first: one index descent per distinct priority (a loose scan of `jobs_ready_idx`), so it
 * costs the same with a million jobs scheduled ahead as with none, where `min(scheduled_at)` over the ready
 * rows would read all of them.
 *
 * A paused type (`job_type_pauses`, migration 0015) is claimed by none of them. `lana_jobs_claim_slotted`
 * leaves it out of its candidates (one key probe per type with ready jobs). The plain claims read the due
 * jobs by priority across all types, so they cannot skip a type without testing each job: while no type is
 * paused they run as written (one read of the empty pauses table), and while any type is, the same
 * statement claims through `lana_jobs_claim_slotted` with no limits instead (`around_pauses`: the two
 * branches test the pauses in the statement's one snapshot, so exactly one of them claims).
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
    WHERE r.scheduled_at <= COALESCE(CAST(:now AS timestamptz), now()) AND NOT EXISTS (SELECT 1 FROM job_type_pauses)
    LIMIT (CASE WHEN EXISTS (SELECT 1 FROM prior) THEN 0 ELSE CAST(:limit AS integer) END)))
  RETURNING id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at,
    lease_expires_at
), around_pauses AS (
  SELECT id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at,
    lease_expires_at
  FROM lana_jobs_claim_slotted('{}'::jsonb, NULL,
    (CASE WHEN EXISTS (SELECT 1 FROM job_type_pauses) THEN (CASE WHEN EXISTS (SELECT 1 FROM prior) THEN 0 ELSE CAST(:limit AS integer) END) ELSE 0 END),
    COALESCE(CAST(:now AS timestamptz), now()), CAST(:start_now AS boolean), CAST(:dispatch_lease_seconds AS integer),
    CAST(:claim_token AS uuid), NULL, NULL, NULL, NULL)
  WHERE EXISTS (SELECT 1 FROM job_type_pauses)
)
SELECT * FROM (SELECT * FROM prior UNION ALL SELECT * FROM claimed UNION ALL SELECT * FROM around_pauses) c
ORDER BY priority, scheduled_at, id`;

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
    WHERE r.scheduled_at <= COALESCE(CAST(:now AS timestamptz), now()) AND NOT EXISTS (SELECT 1 FROM job_type_pauses)
    LIMIT :limit))
  RETURNING id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at,
    lease_expires_at
), around_pauses AS (
  SELECT id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at,
    lease_expires_at
  FROM lana_jobs_claim_slotted('{}'::jsonb, NULL,
    (CASE WHEN EXISTS (SELECT 1 FROM job_type_pauses) THEN CAST(:limit AS integer) ELSE 0 END),
    COALESCE(CAST(:now AS timestamptz), now()), CAST(:start_now AS boolean), CAST(:dispatch_lease_seconds AS integer),
    CAST(:claim_token AS uuid), NULL, NULL, NULL, NULL)
  WHERE EXISTS (SELECT 1 FROM job_type_pauses)
)
SELECT COALESCE(json_agg(json_build_array(id, job_type, payload, attempts, max_attempts,
         priority, idempotency_key, scheduled_at, lease_expires_at) ORDER BY priority, scheduled_at, id),
           '[]')::text
       AS jobs
FROM (SELECT * FROM claimed UNION ALL SELECT * FROM around_pauses) claimed`;

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
    WHERE r.scheduled_at <= COALESCE(CAST(:now AS timestamptz), now()) AND NOT EXISTS (SELECT 1 FROM job_type_pauses)
    LIMIT :limit))
  RETURNING id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at,
    lease_expires_at
), around_pauses AS (
  SELECT id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at,
    lease_expires_at
  FROM lana_jobs_claim_slotted('{}'::jsonb, NULL,
    (CASE WHEN EXISTS (SELECT 1 FROM job_type_pauses) THEN CAST(:limit AS integer) ELSE 0 END),
    COALESCE(CAST(:now AS timestamptz), now()), CAST(:start_now AS boolean), CAST(:dispatch_lease_seconds AS integer),
    CAST(:claim_token AS uuid), NULL, NULL, NULL, NULL)
  WHERE EXISTS (SELECT 1 FROM job_type_pauses)
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
FROM (SELECT * FROM claimed UNION ALL SELECT * FROM around_pauses) claimed`;

/**
 * The limited claim, one row per job in claim order: each job of a limited type (:limits,
 * `{"type": max running}`) takes a free slot of its own, or only :only_type's jobs are claimed.
 * Priorities go first across types; within one priority, types take turns by their earliest due job
 * (`lana_jobs_claim_slotted`, migration 0013, says how the limits hold across concurrent claimers without
 * any claimer waiting for another). A resent claim (`prior`, as in `claimDueJobsSql`) answers with its
 * first run's jobs and claims nothing more.
 */
export const claimLimitedSql = `
WITH prior AS (
  SELECT id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at,
    lease_expires_at
  FROM jobs WHERE claim_token = CAST(:claim_token AS uuid) AND status = 'running'
), claimed AS (
  SELECT * FROM lana_jobs_claim_slotted(CAST(:limits AS jsonb), CAST(:only_type AS text),
    (CASE WHEN EXISTS (SELECT 1 FROM prior) THEN 0 ELSE CAST(:limit AS integer) END),
    COALESCE(CAST(:now AS timestamptz), now()), CAST(:start_now AS boolean),
    CAST(:dispatch_lease_seconds AS integer), CAST(:claim_token AS uuid),
    NULL, NULL, NULL, NULL)
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
  SELECT * FROM lana_jobs_claim_slotted(CAST(:limits AS jsonb), CAST(:only_type AS text),
    CAST(:limit AS integer),
    COALESCE(CAST(:now AS timestamptz), now()), CAST(:start_now AS boolean),
    CAST(:dispatch_lease_seconds AS integer), CAST(:claim_token AS uuid),
    NULL, NULL, NULL, NULL)
)
SELECT COALESCE(json_agg(json_build_array(id, job_type, payload, attempts, max_attempts,
         priority, idempotency_key, scheduled_at, lease_expires_at) ORDER BY priority, scheduled_at, id),
           '[]')::text
       AS jobs
FROM claimed`;

/**
 * The local worker's claim when types have limits. The worker :worker holds slots of a limited type and
 * runs at most that many of its jobs at once, claiming ahead as for any type (`lana_jobs_claim_slotted`):
 * :in_hand (`{"type": jobs running or queued, "$linger": {"type": 1}}`, the types whose slots linger
 * with nothing in hand) and :concurrency say what it can use, and every slot it holds beyond that is
 * given up in the same statement. Answers the document, for a short claim when the
 * next waiting job is due (as `claimDueJobsForWorkerSql`) and whether due jobs were left behind (a type
 * whose slots others hold, or rows another claimer held), and `held`: the slots the worker holds now, per
 * type (`{"type": n}`), read after the claim (a volatile function sees the claim's changes).
 * `rate_slot_free_at`, for a short claim: when the next rate slot used within its window frees (NULL: none),
 * so a worker left with jobs over a type's rate asks again as it frees, instead of at its next poll.
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
  SELECT * FROM lana_jobs_claim_slotted(CAST(:limits AS jsonb), NULL, CAST(:limit AS integer),
    COALESCE(CAST(:now AS timestamptz), now()), true, NULL, NULL,
    CAST(:worker AS uuid), CAST(:concurrency AS integer), CAST(:in_hand AS jsonb),
    CAST(:slot_lease_seconds AS integer))
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
             AND (NOT EXISTS (SELECT 1 FROM job_type_pauses)
                  OR job_type NOT IN (SELECT job_type FROM job_type_pauses))
           LIMIT 1) left_behind
         WHERE r.scheduled_at <= COALESCE(CAST(:now AS timestamptz), now())
       ) ELSE false END AS left_behind,
       CASE WHEN count(*) < :limit THEN (
         SELECT min(s.last_used_at + make_interval(secs => (r.value ->> 1)::double precision))
         FROM jsonb_each(CAST(:limits AS jsonb) -> '$rates') r
         JOIN job_rate_slots s ON s.job_type = r.key AND s.slot < (r.value ->> 0)::integer
         WHERE s.last_used_at > COALESCE(CAST(:now AS timestamptz), now())
                                - make_interval(secs => (r.value ->> 1)::double precision)
       ) END AS rate_slot_free_at,
       lana_jobs_worker_slots(CAST(:worker AS uuid), count(*)) AS held
FROM claimed`;

/**
 * A local worker's claim within the slots it holds, when it needs not settle them (`WorkerSlots.settle`
 * false, with `held`): :in_hand as for `claimLimitedForWorkerSql`, with `"$held": {"type": n}`. It applies
 * when no type is paused and every limited type with due jobs is one the worker holds slots of, due at one
 * priority, with no rate or key limit: then it claims each ready (type, priority) in claim order, a limited
 * type's jobs up to the share `lana_jobs_claim_slotted` gives a type the worker holds slots of, and reads or
 * writes no slot. `applies` false: it claimed nothing, and the worker makes the full claim
 * (`lasting_miss`: for a reason that lasts while those jobs are due, not merely a type it holds no slot
 * of yet); `wants_slots`: a short claim left due jobs of a limited type the worker may hold more slots
 * of, and the full claim takes them. The same jobs as the full claim, in a statement about the size of an unlimited type's claim (the
 * full one runs the function's statements, reads the slots and answers whole rows). `next_due_at` and
 * `left_behind` as there.
 */
export const claimWithinHoldsSql = `
WITH RECURSIVE ready_types AS (
  -- The ready (type, priority) pairs, each with its earliest job (as lana_jobs_claim_slotted walks them).
  (SELECT job_type, priority, scheduled_at FROM jobs
   WHERE status IN ('pending', 'retrying') AND job_type >= ''
   ORDER BY job_type, priority, scheduled_at LIMIT 1)
  UNION ALL
  SELECT n.job_type, n.priority, n.scheduled_at FROM ready_types k CROSS JOIN LATERAL (
    SELECT j.job_type, j.priority, j.scheduled_at FROM jobs j
    WHERE j.status IN ('pending', 'retrying') AND j.job_type >= ''
      AND (j.job_type, j.priority) > (k.job_type, k.priority)
    ORDER BY j.job_type, j.priority, j.scheduled_at LIMIT 1) n
), due_types AS (
  SELECT k.job_type, k.priority, k.scheduled_at,
         (CAST(:limits AS jsonb) ->> k.job_type)::integer AS max_running,
         COALESCE((CAST(:in_hand AS jsonb) -> '$held' ->> k.job_type)::integer, 0) AS held,
         COALESCE((CAST(:in_hand AS jsonb) ->> k.job_type)::integer, 0) AS in_hand
  FROM ready_types k
  WHERE k.scheduled_at <= COALESCE(CAST(:now AS timestamptz), now())
), held_nothing_of AS (
  -- A limited type due that the worker holds no slot of: the full claim takes its slots.
  SELECT EXISTS (SELECT 1 FROM due_types d WHERE d.max_running IS NOT NULL AND d.held = 0) AS yes
), never_within AS (
  -- What a claim within holds does not do while it lasts: a paused type, a limited type due with a rate or
  -- key limit, or at several priorities.
  SELECT EXISTS (SELECT 1 FROM job_type_pauses) OR EXISTS (
    SELECT 1 FROM due_types d
    WHERE d.max_running IS NOT NULL AND (
      CAST(:limits AS jsonb) -> '$rates' ? d.job_type OR CAST(:limits AS jsonb) -> '$keys' ? d.job_type
      OR EXISTS (SELECT 1 FROM due_types o WHERE o.job_type = d.job_type AND o.priority <> d.priority))) AS yes
), applies AS (
  SELECT NOT (SELECT yes FROM held_nothing_of) AND NOT (SELECT yes FROM never_within) AS yes
), claimed AS (
  UPDATE jobs j
  SET status = 'running', attempts = j.attempts + 1, claimed_at = COALESCE(CAST(:now AS timestamptz), now()),
      claim_token = CAST(:claim_token AS uuid),
      started_at = CASE WHEN :start_now THEN COALESCE(CAST(:now AS timestamptz), now()) END,
      lease_expires_at = COALESCE(CAST(:now AS timestamptz), now()) + make_interval(secs =>
        CASE WHEN :start_now THEN j.lease_seconds ELSE CAST(:dispatch_lease_seconds AS integer) END),
      updated_at = COALESCE(CAST(:now AS timestamptz), now())
  WHERE j.ctid = ANY(ARRAY(
    SELECT due.ctid
    FROM (SELECT * FROM due_types ORDER BY priority, scheduled_at, job_type) d CROSS JOIN LATERAL (
      SELECT ctid FROM jobs
      WHERE status IN ('pending', 'retrying') AND job_type = d.job_type AND priority = d.priority
        AND scheduled_at <= COALESCE(CAST(:now AS timestamptz), now())
      ORDER BY scheduled_at, id
      LIMIT CASE WHEN d.max_running IS NULL THEN :limit
                 ELSE GREATEST(d.held - d.in_hand,
                               ceil(CAST(:limit AS numeric) * d.held / CAST(:concurrency AS integer)))
            END
      FOR UPDATE SKIP LOCKED) due
    WHERE (SELECT yes FROM applies)
    LIMIT :limit))
  RETURNING j.id, j.job_type, j.payload, j.attempts, j.max_attempts, j.priority, j.idempotency_key,
    j.scheduled_at, j.lease_expires_at
), left_due AS (
  -- Per due pair, whether a due job is left (read only for a short claim).
  SELECT d.job_type, d.max_running, d.held FROM due_types d
  WHERE EXISTS (
    SELECT 1 FROM jobs
    WHERE status IN ('pending', 'retrying') AND job_type = d.job_type AND priority = d.priority
      AND scheduled_at <= COALESCE(CAST(:now AS timestamptz), now())
      AND id NOT IN (SELECT id FROM claimed))
)
SELECT (SELECT yes FROM applies) AS applies, (SELECT yes FROM never_within) AS lasting_miss,
       COALESCE(json_agg(json_build_array(id, job_type, payload, attempts, max_attempts,
         priority, idempotency_key, scheduled_at, lease_expires_at) ORDER BY priority, scheduled_at, id),
           '[]')::text
       AS jobs,
       CASE WHEN count(*) < :limit THEN (
         SELECT min(ahead.scheduled_at) FROM ready_types r CROSS JOIN LATERAL (
           SELECT scheduled_at FROM jobs
           WHERE status IN ('pending', 'retrying') AND job_type = r.job_type AND priority = r.priority
             AND scheduled_at > COALESCE(CAST(:now AS timestamptz), now())
           ORDER BY scheduled_at
           LIMIT 1) ahead
       ) END AS next_due_at,
       CASE WHEN count(*) < :limit THEN EXISTS (SELECT 1 FROM left_due) ELSE false END AS left_behind,
       CASE WHEN count(*) < :limit THEN EXISTS (
         SELECT 1 FROM left_due d
         WHERE d.max_running IS NOT NULL AND d.held < LEAST(CAST(:concurrency AS integer), d.max_running)
       ) ELSE false END AS wants_slots
FROM claimed`;

/**
 * A local worker's slots settled outside a claim: per type, keeps as many as :keep says
 * (`{"type": jobs in hand}`), renewed, and gives up the rest (waking the other workers). Its heartbeat
 * while it holds slots and claims nothing, and its hand-back of idle slots and of all of them at shutdown
 * (:keep `{}`). Answers the slots it holds afterwards, per type.
 */
export const settleWorkerSlotsSql = `
WITH settled AS (
  SELECT * FROM lana_jobs_settle_worker_slots(CAST(:worker AS uuid), CAST(:limits AS jsonb),
    CAST(:concurrency AS integer), CAST(:keep AS jsonb), COALESCE(CAST(:now AS timestamptz), now()),
    CAST(:slot_lease_seconds AS integer))
)
SELECT COALESCE(jsonb_object_agg(slot_type, n), '{}'::jsonb)::text AS held
FROM (SELECT slot_type, count(*)::integer AS n FROM settled WHERE NOT given_up GROUP BY slot_type) h`;

/**
 * Makes the slot rows of the limited types (:limits, `{"type": max running}`) that do not exist yet, in a
 * statement of its own, before a process's first limited claim: inside a claim, an insert would wait for
 * another claimer that inserted the same rows and has not committed. Rows beyond a lowered limit stay
 * and are not used.
 */
export const ensureSlotsSql = `
INSERT INTO job_slots (job_type, slot)
SELECT l.key, s.n
FROM jsonb_each_text(CAST(:limits AS jsonb)) l CROSS JOIN LATERAL generate_series(0, l.value::integer - 1) s(n)
ON CONFLICT DO NOTHING`;

/**
 * Makes the rate slot rows of the rate-limited types (:rates, `{"type": [limit, perSeconds]}`) that do not
 * exist yet, in a statement of its own, as `ensureSlotsSql` does for the concurrency slots. Rows beyond a
 * lowered limit stay and are not used.
 */
export const ensureRateSlotsSql = `
INSERT INTO job_rate_slots (job_type, slot)
SELECT r.key, s.n
FROM jsonb_each(CAST(:rates AS jsonb)) r CROSS JOIN LATERAL generate_series(0, (r.value ->> 0)::integer - 1) s(n)
ON CONFLICT DO NOTHING`;
