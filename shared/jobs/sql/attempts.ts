/** An attempt after its claim: start, completion (alone or with the next claim), failure, rescue, release. */

/**
 * Marks a claimed attempt as begun by its executor and renews its lease from the claim's short dispatch
 * lease to the run's (the type's timeout plus grace), and closes the type's circuit breaker (see
 * `rescueExpiredLeasesSql`). Returns the job only for the first delivery of the
 * current attempt while its dispatch lease holds; a duplicate, a stale attempt, or an event that arrived
 * after the dispatch lease expired (the rescuer hands such a claim back, and a newer attempt may already
 * run) gets no row, so nothing runs.
 * :token is made per call: the same statement sent again by its driver (an answer lost after the commit)
 * finds its own token and gets the job again; another delivery brings another token.
 *
 * A paced start (:rates, `{"type": [limit, perSeconds]}`, given for an event's delivery on AWS) of a
 * rate-limited type plans the run's start on a rate slot, so that the type's starts, not only its claims,
 * keep the rate: the job's claim marked a slot at the claim's time, and the event arrives later by a
 * varying delay. The start takes back that slot if nobody used it since (its previous use is a window
 * before the claim, so starting now is within the rate), else the slot free soonest within
 * `rateAheadSeconds` (:rate_ahead_seconds at most), and marks it with the planned start: :start_lead_ms
 * from now, or a window after the slot's last use. `started_at` is that planned start (the executor
 * waits for it), and the lease runs from it. No slot within reach: no row (the executor hands the claim
 * back, uncounted). A type without a rate (or without rate slot rows: no claimer keeps one for it), or
 * :rates NULL (a lease renewal), starts now as before.
 */
export const startAttemptSql = `
WITH target AS (
  -- The job by its key alone (OFFSET 0 keeps the planner from reading it through another index).
  SELECT j.id, j.job_type, j.claimed_at, CAST(:rates AS jsonb) -> j.job_type AS rate
  FROM (SELECT id, job_type, claimed_at, attempts, status, started_at, lease_expires_at FROM jobs
        WHERE id = CAST(:id AS uuid) OFFSET 0) j
  WHERE j.attempts = :attempt AND j.status = 'running' AND j.started_at IS NULL
    AND j.lease_expires_at > COALESCE(CAST(:now AS timestamptz), now())
    AND COALESCE(CAST(:rates AS jsonb) ? j.job_type, false)
    -- No rate slot rows: the claimers keep no rate for the type (a setting not yet everywhere).
    AND EXISTS (SELECT 1 FROM job_rate_slots WHERE job_type = j.job_type)
), own AS (
  SELECT s.job_type, s.slot, s.last_used_at FROM target t
  JOIN job_rate_slots s ON s.job_type = t.job_type AND s.slot < (t.rate ->> 0)::integer
                       AND s.last_used_at = t.claimed_at
  ORDER BY s.slot LIMIT 1
  FOR UPDATE OF s SKIP LOCKED
), other AS (
  SELECT s.job_type, s.slot, s.last_used_at + make_interval(secs => (t.rate ->> 1)::double precision) AS free_at
  FROM target t
  JOIN job_rate_slots s ON s.job_type = t.job_type AND s.slot < (t.rate ->> 0)::integer
  WHERE NOT EXISTS (SELECT 1 FROM own)
    AND (s.last_used_at IS NULL
         OR s.last_used_at <= COALESCE(CAST(:now AS timestamptz), now())
              + make_interval(secs => LEAST((t.rate ->> 1)::double precision, :rate_ahead_seconds)
                                      - (t.rate ->> 1)::double precision))
  ORDER BY s.last_used_at NULLS FIRST, s.slot LIMIT 1
  FOR UPDATE OF s SKIP LOCKED
), pace AS (
  -- Its own slot no sooner than the claim's time: a claim made ahead planned it then.
  SELECT job_type, slot, GREATEST(COALESCE(CAST(:now AS timestamptz), now())
                                  + make_interval(secs => CAST(:start_lead_ms AS integer) / 1000.0),
                                  last_used_at) AS at
  FROM own
  UNION ALL
  SELECT job_type, slot, GREATEST(COALESCE(CAST(:now AS timestamptz), now())
                                  + make_interval(secs => CAST(:start_lead_ms AS integer) / 1000.0),
                                  free_at) FROM other
), stamped AS (
  UPDATE job_rate_slots r SET last_used_at = p.at
  FROM pace p WHERE r.job_type = p.job_type AND r.slot = p.slot
), started AS (
  UPDATE jobs
  SET lease_expires_at = CASE WHEN started_at IS NULL
                         THEN COALESCE((SELECT at FROM pace), COALESCE(CAST(:now AS timestamptz), now()))
                              + make_interval(secs => lease_seconds)
                         ELSE lease_expires_at END,
      started_at = COALESCE(started_at, (SELECT at FROM pace), COALESCE(CAST(:now AS timestamptz), now())),
      start_token = CAST(:token AS uuid),
      updated_at = COALESCE(CAST(:now AS timestamptz), now())
  WHERE id = CAST(:id AS uuid) AND attempts = :attempt AND status = 'running'
    AND ((started_at IS NULL AND lease_expires_at > COALESCE(CAST(:now AS timestamptz), now())
          AND (NOT EXISTS (SELECT 1 FROM target) OR EXISTS (SELECT 1 FROM pace)))
         OR start_token = CAST(:token AS uuid))
  RETURNING id, job_type, payload, status, attempts, max_attempts, priority, idempotency_key,
    scheduled_at, started_at, completed_at, lease_expires_at, last_error, created_at, updated_at
), delivered AS (
  -- An executor began an attempt of this type: its events arrive, so its circuit breaker closes.
  UPDATE job_type_dispatch d SET undelivered_streak = 0
  FROM started s WHERE d.job_type = s.job_type AND d.undelivered_streak > 0
)
SELECT * FROM started`;

/**
 * Completes attempts in one statement. Fenced: only a row still running the given attempt changes, so an
 * executor whose lease expired cannot overwrite a newer attempt. Returns one JSON document listing the
 * attempts that applied, `[[id, job_type, duration_ms], ...]` (one value to decode instead of a row each).
 * :token (per call, or NULL) marks the rows this call completed: the same statement sent again after it
 * committed finds them and lists them as applied, where it would otherwise find them fenced out.
 * A completed job's row is its attempt's history record (the view `job_executions`, migration 0026): the
 * completion keeps the attempt's duration on it (the reported one, else the time since the attempt began
 * or was claimed) and writes no `job_execution_records` row.
 */
export const completeAttemptsSql = `
WITH items AS (
  SELECT * FROM json_to_recordset(CAST(:items AS json)) AS x(id uuid, attempt integer, duration_ms integer)
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
  WHERE j.id = ANY(ARRAY(SELECT id FROM items))
    AND j.id = x.id AND j.attempts = x.attempt AND j.status = 'running'
  -- The lease is left as it was (only enforced while running), so the claim time stays derivable (the view
  -- job_executions derives it so).
  RETURNING j.id, j.job_type, x.duration_ms
), resent AS (
  SELECT j.id, j.job_type, x.duration_ms FROM jobs j JOIN items x ON j.id = x.id
  WHERE j.id = ANY(ARRAY(SELECT id FROM items)) AND j.attempts = x.attempt AND j.status = 'completed'
    AND j.finish_token = CAST(:token AS uuid)
)
SELECT COALESCE(json_agg(json_build_array(id, job_type, duration_ms)), '[]')::text AS applied
FROM (SELECT id, job_type, duration_ms FROM done UNION ALL SELECT id, job_type, duration_ms FROM resent) a`;

/**
 * An executor's report and its next job in one statement: completes one attempt (fenced, as
 * `completeAttemptsSql`) and then claims the next due job of :only_type within the type's concurrency
 * limit (`lana_jobs_claim_slotted`, which sees the completion: a volatile function sees the changes its
 * calling statement made before it, and the claim waits on `finished`, which waits on `freed`, so the
 * slot the completion freed is free). The next job holds a dispatch lease, not a run's: the executor begins it with
 * `startAttemptSql`, so an executor that dies in between frees the slot within the dispatch lease and the
 * claim goes back uncounted (`undelivered`). Answers one row: whether the completion applied, and the next job's columns
 * (NULL when none). :token marks both, so a resent statement reports its first run's completion and
 * answers with the job that run claimed, and claims nothing more.
 * A rate-limited type's next job is claimed ahead, at the time its start is planned (`pace`): the rate
 * slot free soonest, if it frees within `min(perSeconds, :rate_ahead_seconds)` (else nothing is claimed:
 * the type's starts are planned that far ahead already), and never sooner than :start_lead_ms from now, so
 * the answer is back before it. The claim's time (its lease less the dispatch lease) is the planned start.
 * :id NULL claims without completing anything.
 */
export const completeAndClaimNextSql = `
WITH items AS (
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
), freed AS (
  -- The attempt's slot, freed here for the claim below: the trigger that frees it runs at the end of the
  -- statement (migration 0017), after the claim.
  UPDATE job_slots s SET holder = NULL, expires_at = NULL
  FROM done d WHERE s.job_type = d.job_type AND s.slot = d.slot AND s.holder = d.id
  RETURNING 1
), resent AS (
  SELECT j.id FROM jobs j JOIN items x ON j.id = x.id
  WHERE j.attempts = x.attempt AND j.status = 'completed' AND j.finish_token = CAST(:token AS uuid)
), prior AS (
  SELECT id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at,
         lease_expires_at
  FROM jobs WHERE claim_token = CAST(:token AS uuid) AND status = 'running'
), finished AS (
  SELECT (SELECT count(*) FROM done) + (SELECT count(*) FROM resent) AS applied,
         (SELECT count(*) FROM freed) AS freed_slots,
         (SELECT count(*) FROM prior) AS prior_claims
), rate AS (
  SELECT CAST(:limits AS jsonb) -> '$rates' -> CAST(:only_type AS text) AS r
), pace AS (
  -- A rate-limited type's next job is claimed ahead onto the rate slot free soonest: its start is
  -- planned then (the claim's time; the executor waits for it), never sooner than :start_lead_ms from now.
  SELECT CASE WHEN rate.r IS NULL THEN COALESCE(CAST(:now AS timestamptz), now())
              ELSE GREATEST(COALESCE(CAST(:now AS timestamptz), now())
                              + make_interval(secs => CAST(:start_lead_ms AS integer) / 1000.0),
                            (SELECT min(COALESCE(s.last_used_at, '-infinity'::timestamptz))
                             FROM job_rate_slots s
                             WHERE s.job_type = CAST(:only_type AS text) AND s.slot < (rate.r ->> 0)::integer)
                              + make_interval(secs => (rate.r ->> 1)::double precision)) END AS at,
         CASE WHEN rate.r IS NULL THEN 0 ELSE LEAST((rate.r ->> 1)::double precision, :rate_ahead_seconds) END
           AS ahead_seconds
  FROM rate
), next AS (
  SELECT * FROM prior
  UNION ALL
  SELECT id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at,
         lease_expires_at
  FROM finished f CROSS JOIN pace p CROSS JOIN LATERAL lana_jobs_claim_slotted(
    CAST(:limits AS jsonb), CAST(:only_type AS text),
    CASE WHEN f.prior_claims > 0
              OR p.at > COALESCE(CAST(:now AS timestamptz), now())
                          + make_interval(secs => p.ahead_seconds + CAST(:start_lead_ms AS integer) / 1000.0)
         THEN 0 ELSE 1 END,
    p.at, false, CAST(:dispatch_lease_seconds AS integer),
    CAST(:token AS uuid), NULL, NULL, NULL, NULL)
)
SELECT f.applied > 0 AS applied, n.*
FROM finished f LEFT JOIN next n ON true`;

/**
 * Fails attempts reported by their executors (:items, a JSON list of {id, attempt, error, retry_at,
 * permanent, duration_ms, outcome}). Fenced like completion: only a row still running the given attempt
 * changes. A failed attempt n becomes `retrying` at now + min(base * 2^n, cap) while n < max_attempts (n
 * counted since attempt_offset), else `failed`; a permanent failure fails at once; a requested retry_at
 * replaces the backoff. An `uncounted` attempt (a retry the executor asked for, a run interrupted by a
 * worker's shutdown, an event that never reached its executor) does not count: like a released claim it
 * grows max_attempts and attempt_offset, so the job is never failed for it and the backoff does not grow;
 * an undelivered first attempt goes back to `pending`. Each attempt's execution row is closed. :token (per
 * call) marks the rows this call failed: the same statement sent again after it committed reports them
 * (`resent`) instead of finding them fenced out.
 */
export const failAttemptsFromInputSql = `
WITH input AS (
  SELECT i.*,
         (NOT i.permanent AND i.outcome IN ('retry_requested', 'interrupted', 'undelivered')) AS uncounted
  FROM (
    SELECT x.id, x.attempt, x.error, x.retry_at, COALESCE(x.permanent, false) AS permanent, x.duration_ms,
           COALESCE(x.outcome, 'failed') AS outcome
    FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS x(
      id uuid, attempt integer, error text, retry_at timestamptz, permanent boolean, duration_ms integer,
      outcome text)
  ) i
), failed AS (
  UPDATE jobs j
  SET status = CASE WHEN x.permanent OR (NOT x.uncounted AND j.attempts >= j.max_attempts) THEN 'failed'
                    WHEN x.outcome = 'undelivered' AND j.attempts - 1 <= j.attempt_offset THEN 'pending'
                    ELSE 'retrying' END,
      scheduled_at = CASE WHEN x.permanent OR (NOT x.uncounted AND j.attempts >= j.max_attempts)
                          THEN j.scheduled_at
        ELSE COALESCE(x.retry_at, COALESCE(CAST(:now AS timestamptz), now()) + make_interval(secs =>
          LEAST(j.backoff_base_seconds * power(2, j.attempts - j.attempt_offset), j.backoff_cap_seconds)))
        END,
      max_attempts = j.max_attempts + CASE WHEN x.uncounted THEN 1 ELSE 0 END,
      attempt_offset = j.attempt_offset + CASE WHEN x.uncounted THEN 1 ELSE 0 END,
      completed_at = CASE WHEN x.permanent OR (NOT x.uncounted AND j.attempts >= j.max_attempts)
                          THEN COALESCE(CAST(:now AS timestamptz), now()) END,
      handbacks = j.handbacks + CASE WHEN x.outcome = 'undelivered' THEN 1 ELSE 0 END,
      last_error = x.error,
      updated_at = COALESCE(CAST(:now AS timestamptz), now()),
      finish_token = CAST(:token AS uuid)
  FROM input x
  WHERE j.id = ANY(ARRAY(SELECT id FROM input))
    AND j.id = x.id AND j.attempts = x.attempt AND j.status = 'running'
  RETURNING j.id, j.job_type, j.attempts, j.status, j.scheduled_at, x.error, x.outcome, x.duration_ms,
            COALESCE(j.claimed_at, j.lease_expires_at - make_interval(secs => j.lease_seconds)) AS claimed_at,
            j.started_at AS run_started_at
), closed AS (
  INSERT INTO job_execution_records (job_id, attempt, claimed_at, started_at, finished_at, outcome,
                                     error, duration_ms)
  SELECT e.id, e.attempts, e.claimed_at, e.run_started_at, COALESCE(CAST(:now AS timestamptz), now()),
         e.outcome, e.error,
         COALESCE(e.duration_ms,
                  (extract(epoch FROM COALESCE(CAST(:now AS timestamptz), now())
                                      - COALESCE(e.run_started_at, e.claimed_at)) * 1000)::integer)
  FROM failed e
), resent AS (
  -- This call's own earlier run (:token), sent again after it committed: report what it did.
  SELECT j.id, j.job_type, j.attempts, j.status, j.scheduled_at, x.duration_ms, x.outcome
  FROM jobs j JOIN input x ON j.id = x.id
  WHERE j.id = ANY(ARRAY(SELECT id FROM input)) AND j.attempts = x.attempt
    AND j.status IN ('retrying', 'failed', 'pending') AND j.finish_token = CAST(:token AS uuid)
)
SELECT id, job_type, attempts, status, scheduled_at, duration_ms, outcome FROM failed
UNION ALL
SELECT id, job_type, attempts, status, scheduled_at, duration_ms, outcome FROM resent`;

/**
 * The rescuer: running jobs whose lease has expired, failed by the rule of `failAttemptsFromInputSql`. An
 * attempt that began (its executor crashed, hung or timed out) fails under the retry rule. A claim whose
 * attempt never began (its event was lost, or reached the executor after the dispatch lease, which the
 * start then refused) is handed back, due at once, and does not count as an attempt: it is recorded
 * `undelivered`, up to :max_handbacks times: the claim that reaches it fails the job for good, saying it
 * was never delivered. Each type's hand-backs feed its circuit breaker (`job_type_dispatch`: while open,
 * the claim lets one probe through at a time), which an executor's start closes. Bounded per call
 * (:limit); concurrent rescuers skip each other's rows.
 */
export const rescueExpiredLeasesSql = `
WITH input AS (
  SELECT j.id, j.attempts AS attempt,
         CASE WHEN j.started_at IS NULL AND j.handbacks + 1 >= CAST(:max_handbacks AS integer)
              THEN 'never delivered: no executor began any of its last ' || (j.handbacks + 1)
                   || ' claims before their dispatch lease expired'
              WHEN j.started_at IS NULL
              THEN 'undelivered: no executor began the attempt before its dispatch lease expired'
              ELSE 'lease expired: the executor did not report within ' || j.lease_seconds || ' s'
         END AS error,
         CASE WHEN j.started_at IS NULL THEN COALESCE(CAST(:now AS timestamptz), now()) END AS retry_at,
         (j.started_at IS NULL AND j.handbacks + 1 >= CAST(:max_handbacks AS integer)) AS permanent,
         NULL::integer AS duration_ms,
         CASE WHEN j.started_at IS NULL THEN 'undelivered' ELSE 'lease_expired' END AS outcome,
         j.started_at IS NULL AS uncounted
  FROM jobs j
  WHERE j.status = 'running' AND j.lease_expires_at < COALESCE(CAST(:now AS timestamptz), now())
  ORDER BY j.lease_expires_at
  LIMIT :limit
  FOR UPDATE SKIP LOCKED
), failed AS (
  UPDATE jobs j
  SET status = CASE WHEN x.permanent OR (NOT x.uncounted AND j.attempts >= j.max_attempts) THEN 'failed'
                    WHEN x.outcome = 'undelivered' AND j.attempts - 1 <= j.attempt_offset THEN 'pending'
                    ELSE 'retrying' END,
      scheduled_at = CASE WHEN x.permanent OR (NOT x.uncounted AND j.attempts >= j.max_attempts)
                          THEN j.scheduled_at
        ELSE COALESCE(x.retry_at, COALESCE(CAST(:now AS timestamptz), now()) + make_interval(secs =>
          LEAST(j.backoff_base_seconds * power(2, j.attempts - j.attempt_offset), j.backoff_cap_seconds)))
        END,
      max_attempts = j.max_attempts + CASE WHEN x.uncounted THEN 1 ELSE 0 END,
      attempt_offset = j.attempt_offset + CASE WHEN x.uncounted THEN 1 ELSE 0 END,
      completed_at = CASE WHEN x.permanent OR (NOT x.uncounted AND j.attempts >= j.max_attempts)
                          THEN COALESCE(CAST(:now AS timestamptz), now()) END,
      handbacks = j.handbacks + CASE WHEN x.outcome = 'undelivered' THEN 1 ELSE 0 END,
      last_error = x.error,
      updated_at = COALESCE(CAST(:now AS timestamptz), now()),
      finish_token = CAST(:token AS uuid)
  FROM input x
  WHERE j.id = ANY(ARRAY(SELECT id FROM input))
    AND j.id = x.id AND j.attempts = x.attempt AND j.status = 'running'
  RETURNING j.id, j.job_type, j.attempts, j.status, j.scheduled_at, x.error, x.outcome, x.duration_ms,
            COALESCE(j.claimed_at, j.lease_expires_at - make_interval(secs => j.lease_seconds)) AS claimed_at,
            j.started_at AS run_started_at
), closed AS (
  INSERT INTO job_execution_records (job_id, attempt, claimed_at, started_at, finished_at, outcome,
                                     error, duration_ms)
  SELECT e.id, e.attempts, e.claimed_at, e.run_started_at, COALESCE(CAST(:now AS timestamptz), now()),
         e.outcome, e.error,
         COALESCE(e.duration_ms,
                  (extract(epoch FROM COALESCE(CAST(:now AS timestamptz), now())
                                      - COALESCE(e.run_started_at, e.claimed_at)) * 1000)::integer)
  FROM failed e
), streak AS (
  -- Each type's undelivered hand-backs since one of its attempts last began: its circuit breaker.
  INSERT INTO job_type_dispatch AS d (job_type, undelivered_streak, last_undelivered_at)
  SELECT f.job_type, count(*), COALESCE(CAST(:now AS timestamptz), now())
  FROM failed f WHERE f.outcome = 'undelivered' GROUP BY f.job_type
  ON CONFLICT (job_type) DO UPDATE
  SET undelivered_streak = d.undelivered_streak + EXCLUDED.undelivered_streak,
      last_undelivered_at = EXCLUDED.last_undelivered_at
), resent AS (
  -- This call's own earlier run (:token), sent again after it committed: report what it did.
  SELECT j.id, j.job_type, j.attempts, j.status, j.scheduled_at, x.duration_ms, x.outcome
  FROM jobs j JOIN input x ON j.id = x.id
  WHERE j.id = ANY(ARRAY(SELECT id FROM input)) AND j.attempts = x.attempt
    AND j.status IN ('retrying', 'failed', 'pending') AND j.finish_token = CAST(:token AS uuid)
)
SELECT id, job_type, attempts, status, scheduled_at, duration_ms, outcome FROM failed
UNION ALL
SELECT id, job_type, attempts, status, scheduled_at, duration_ms, outcome FROM resent`;

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
      started_at = NULL, updated_at = COALESCE(CAST(:now AS timestamptz), now())
  FROM items x
  WHERE j.id = ANY(ARRAY(SELECT id FROM items))
    AND j.id = x.id AND j.attempts = x.attempt AND j.status = 'running'
    AND (j.started_at IS NULL OR NOT :require_unstarted)
  -- RETURNING sees the new row: started_at is NULL now, so the begun time (if any) is not recorded.
  RETURNING j.id, j.attempts,
            COALESCE(j.claimed_at, j.lease_expires_at - make_interval(secs => j.lease_seconds)) AS claimed_at,
            NULL::timestamptz AS run_started_at, NULL::integer AS duration_ms, 'released'::text AS outcome,
            'released unstarted'::text AS error
), closed AS (
  INSERT INTO job_execution_records (job_id, attempt, claimed_at, started_at, finished_at, outcome,
                                     error, duration_ms)
  SELECT e.id, e.attempts, e.claimed_at, e.run_started_at, COALESCE(CAST(:now AS timestamptz), now()),
         e.outcome, e.error,
         COALESCE(e.duration_ms,
                  (extract(epoch FROM COALESCE(CAST(:now AS timestamptz), now())
                                      - COALESCE(e.run_started_at, e.claimed_at)) * 1000)::integer)
  FROM released e
), woken AS (
  SELECT pg_notify('lana_jobs', '') FROM (SELECT 1 FROM released LIMIT 1) AS any_released
)
-- A SELECT in WITH runs only if referenced: the count makes the notification happen.
SELECT id FROM released, (SELECT count(*) FROM woken) AS notified`;
