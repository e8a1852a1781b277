/**
 * A job claimed behind the running one in its slot (the AWS executor's loop, `shared/aws/executor.ts`).
 *
 * An executor that completes a job and then claims the next one leaves the job's slot idle for that
 * statement's round trip. Instead, while a job A runs in slot s (`job_slots.holder` = A), its executor
 * holds the type's next due job B *behind* it: B is `running` under a dispatch lease (`started_at` NULL,
 * as any job claimed for an executor), `jobs.slot` = s, but B holds no slot row, so the slot table still
 * counts one job in s. When A ends, the executor starts B at once and sends one statement that completes
 * A, passes s to B (holder = B), begins B (run lease) and claims the next job behind B.
 *
 * A behind job that is never begun (its executor died) is handed back uncounted when its dispatch lease
 * ends, like any undelivered claim; the trigger that frees a slot (`lana_jobs_slot_follows_attempt`,
 * migration 0017) frees only a slot the job holds, so that frees nothing and A keeps s.
 */

/**
 * Completes :id's attempt (fenced, as `completeAttemptsSql`; NULL: none) and then:
 * - with :behind_id (the job claimed behind it, attempt :behind_attempt): locks the finished job's slot row
 *   (still held by it, so no claim can take it), begins the behind job (`started_at`, a run lease, as
 *   `startAttemptSql`; only while its dispatch lease holds, and only in that slot) and passes the slot to
 *   it. If the completion did not apply, or the behind job is no longer this claim's, nothing passes and
 *   the finished job's slot is freed as usual (by the trigger).
 * - without: frees the finished job's slot and claims the type's next due job into a free slot
 *   (`lana_jobs_claim_slotted`, as `completeAndClaimNextSql`).
 * Then, with :behind, claims the type's next due job behind the job that now holds the slot (the one
 * begun or claimed here): a due job of the type's first ready priority, `running` under a dispatch lease
 * with that slot's number and no slot row. Only while the type has no free slot (a job that could start at
 * once in one does not wait behind another), and not while the type is paused or its circuit breaker is
 * open (`job_type_dispatch`), nor for a type without a concurrency limit (no slot).
 *
 * Answers a row per job (`role` 'next': the job begun or claimed into the slot; 'behind'), each with
 * `applied` (whether the completion applied), or one row of NULLs with `applied`. :token marks everything
 * this call did, so the same statement sent again after it committed answers the same and does nothing
 * more (`earlier`). :claim_token is :token and :start_now false: the claim's UPDATE is the claim's copy.
 */
export const completeAndClaimBehindSql = `
WITH RECURSIVE items AS (
  SELECT CAST(:id AS uuid) AS id, CAST(:attempt AS integer) AS attempt,
         CAST(:duration_ms AS integer) AS duration_ms
), done AS (
  UPDATE jobs j
  SET status = 'completed', completed_at = COALESCE(CAST(:now AS timestamptz), now()),
      updated_at = COALESCE(CAST(:now AS timestamptz), now()), finish_token = CAST(:token AS uuid),
      -- The row is now the attempt's history record (the view job_executions); the duration completes it.
      duration_ms = COALESCE(x.duration_ms,
        (extract(epoch FROM COALESCE(CAST(:now AS timestamptz), now())
                            - COALESCE(j.started_at, COALESCE(j.claimed_at,
                                         j.lease_expires_at - make_interval(secs => j.lease_seconds))))
         * 1000)::integer)
  FROM items x
  WHERE j.id = x.id AND j.attempts = x.attempt AND j.status = 'running'
  RETURNING j.id, j.job_type, j.slot
), resent AS (
  SELECT j.id FROM jobs j JOIN items x ON j.id = x.id
  WHERE j.attempts = x.attempt AND j.status = 'completed' AND j.finish_token = CAST(:token AS uuid)
), earlier AS (
  -- This call's first run, sent again: the job it began or claimed into the slot, and the one behind it.
  SELECT j.id, j.job_type, j.payload, j.attempts, j.max_attempts, j.priority, j.idempotency_key,
         j.scheduled_at, j.lease_expires_at,
         (j.id = CAST(:behind_id AS uuid)
          OR EXISTS (SELECT 1 FROM job_slots s
                     WHERE s.job_type = j.job_type AND s.slot = j.slot AND s.holder = j.id)) AS holds_slot
  FROM jobs j
  WHERE j.status = 'running'
    AND (j.claim_token = CAST(:token AS uuid)
         OR (j.id = CAST(:behind_id AS uuid) AND j.start_token = CAST(:token AS uuid)))
), held AS (
  -- The finished job's slot, still its own: locked, so no claim takes it before it passes.
  SELECT s.job_type, s.slot FROM job_slots s JOIN done d
    ON s.job_type = d.job_type AND s.slot = d.slot AND s.holder = d.id
  WHERE CAST(:behind_id AS uuid) IS NOT NULL
  FOR UPDATE OF s
), begun AS (
  UPDATE jobs j
  SET started_at = COALESCE(CAST(:now AS timestamptz), now()),
      lease_expires_at = COALESCE(CAST(:now AS timestamptz), now()) + make_interval(secs => j.lease_seconds),
      start_token = CAST(:token AS uuid), updated_at = COALESCE(CAST(:now AS timestamptz), now())
  FROM held h
  WHERE j.id = CAST(:behind_id AS uuid) AND j.attempts = CAST(:behind_attempt AS integer)
    AND j.status = 'running' AND j.started_at IS NULL
    AND j.lease_expires_at > COALESCE(CAST(:now AS timestamptz), now())
    AND j.job_type = h.job_type AND j.slot = h.slot
  RETURNING j.id, j.job_type, j.payload, j.attempts, j.max_attempts, j.priority, j.idempotency_key,
            j.scheduled_at, j.lease_expires_at, j.slot
), passed AS (
  -- The trigger then leaves the slot alone: it frees only a slot its job holds.
  UPDATE job_slots s SET holder = b.id, expires_at = b.lease_expires_at
  FROM begun b WHERE s.job_type = b.job_type AND s.slot = b.slot
  RETURNING 1
), freed AS (
  -- Nothing behind: the slot is freed here for the claim below (the trigger would free it only at the
  -- statement's end, after the claim).
  UPDATE job_slots s SET holder = NULL, expires_at = NULL
  FROM done d
  WHERE CAST(:behind_id AS uuid) IS NULL AND s.job_type = d.job_type AND s.slot = d.slot AND s.holder = d.id
  RETURNING 1
), finished AS (
  SELECT (SELECT count(*) FROM done) + (SELECT count(*) FROM resent) AS applied,
         (SELECT count(*) FROM freed) + (SELECT count(*) FROM passed) AS settled_slots,
         (SELECT count(*) FROM earlier) AS earlier_claims
), claimed AS (
  SELECT n.id, n.job_type, n.payload, n.attempts, n.max_attempts, n.priority, n.idempotency_key,
         n.scheduled_at, n.lease_expires_at, n.slot
  FROM finished f CROSS JOIN LATERAL lana_jobs_claim_slotted(
    CAST(:limits AS jsonb), CAST(:only_type AS text),
    CASE WHEN f.earlier_claims > 0 OR CAST(:behind_id AS uuid) IS NOT NULL THEN 0 ELSE 1 END,
    COALESCE(CAST(:now AS timestamptz), now()), false, CAST(:dispatch_lease_seconds AS integer),
    CAST(:token AS uuid), NULL, NULL, NULL, NULL) n
), ahead AS (
  SELECT * FROM begun UNION ALL SELECT * FROM claimed
), type_priorities AS (
  -- The earliest ready job of each of the type's priorities (one index descent each).
  (SELECT priority, scheduled_at FROM jobs
   WHERE status IN ('pending', 'retrying') AND job_type = CAST(:only_type AS text)
   ORDER BY priority, scheduled_at LIMIT 1)
  UNION ALL
  SELECT n.priority, n.scheduled_at FROM type_priorities e CROSS JOIN LATERAL (
    SELECT priority, scheduled_at FROM jobs
    WHERE status IN ('pending', 'retrying') AND job_type = CAST(:only_type AS text) AND priority > e.priority
    ORDER BY priority, scheduled_at LIMIT 1) n
), behind AS (
  UPDATE jobs j
  SET status = 'running', attempts = j.attempts + 1, claimed_at = COALESCE(CAST(:now AS timestamptz), now()),
      claim_token = CAST(:claim_token AS uuid),
      started_at = CASE WHEN :start_now THEN COALESCE(CAST(:now AS timestamptz), now()) END,
      lease_expires_at = COALESCE(CAST(:now AS timestamptz), now()) + make_interval(secs =>
        CASE WHEN :start_now THEN j.lease_seconds ELSE CAST(:dispatch_lease_seconds AS integer) END),
      updated_at = COALESCE(CAST(:now AS timestamptz), now()), slot = a.slot
  FROM ahead a
  WHERE a.slot IS NOT NULL AND j.ctid = (
    -- Its due range ends at the first job scheduled ahead; rows another claimer holds are passed by. The
    -- conditions that name no row are tested once, before any row is locked.
    SELECT d.ctid
    FROM (SELECT priority FROM type_priorities WHERE scheduled_at <= COALESCE(CAST(:now AS timestamptz), now())
          ORDER BY priority LIMIT 1) r
    CROSS JOIN LATERAL (
      SELECT ctid FROM jobs
      WHERE status IN ('pending', 'retrying') AND job_type = CAST(:only_type AS text) AND priority = r.priority
        AND scheduled_at <= COALESCE(CAST(:now AS timestamptz), now())
        -- The job claimed into the slot above still looks ready to this statement.
        AND id NOT IN (SELECT id FROM claimed)
      ORDER BY scheduled_at, id LIMIT 1
      FOR UPDATE SKIP LOCKED) d
    WHERE CAST(:behind AS boolean) AND (SELECT earlier_claims FROM finished) = 0
      AND EXISTS (SELECT 1 FROM ahead WHERE slot IS NOT NULL)
      -- A job waits behind another only while the type has no free slot to start it in at once.
      AND NOT EXISTS (SELECT 1 FROM job_slots s
                      WHERE s.job_type = CAST(:only_type AS text)
                        AND s.slot < (CAST(:limits AS jsonb) ->> CAST(:only_type AS text))::integer
                        AND (s.holder IS NULL OR s.expires_at <= COALESCE(CAST(:now AS timestamptz), now())))
      AND NOT EXISTS (SELECT 1 FROM job_type_pauses WHERE job_type = CAST(:only_type AS text))
      AND NOT EXISTS (SELECT 1 FROM job_type_dispatch
                      WHERE job_type = CAST(:only_type AS text)
                        AND undelivered_streak >= lana_jobs_breaker_threshold()))
  RETURNING j.id, j.job_type, j.payload, j.attempts, j.max_attempts, j.priority, j.idempotency_key,
            j.scheduled_at, j.lease_expires_at
), answer AS (
  SELECT 'next' AS role, id, job_type, payload, attempts, max_attempts, priority, idempotency_key,
         scheduled_at, lease_expires_at FROM ahead
  UNION ALL
  SELECT 'behind', id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at,
         lease_expires_at FROM behind
  UNION ALL
  SELECT CASE WHEN holds_slot THEN 'next' ELSE 'behind' END, id, job_type, payload, attempts, max_attempts,
         priority, idempotency_key, scheduled_at, lease_expires_at FROM earlier
)
SELECT f.applied > 0 AS applied, a.*
FROM finished f LEFT JOIN answer a ON true`;
