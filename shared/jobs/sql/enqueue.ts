/** Enqueueing: the bulk and one-row inserts, the eager start's insert, and the lookups after a conflict. */

/**
 * Inserts many jobs from one JSON array; rows whose (type, key) already exists are skipped. The caller
 * made each job's id and knows its input, so the answer is small whatever the batch size: a first row with
 * how many rows were inserted and their creation time (one instant: the statement's), then the ids of the
 * inserted keyed rows, up to 1,000 per row as a JSON array (under the Data API's 64 KB per row, and
 * 10,000 keyed jobs stay far under its 1 MiB per answer). Unkeyed rows are never skipped.
 * The payload is taken as json and cast after: json_to_recordset building jsonb values itself costs twice
 * as much, which is most of a bulk enqueue's server time.
 */
export const insertJobsSql = `
WITH inserted AS (
  INSERT INTO jobs (id, job_type, payload, scheduled_at, max_attempts, backoff_base_seconds,
                    backoff_cap_seconds, lease_seconds, priority, idempotency_key, created_at, updated_at,
                    concurrency_key)
  SELECT r.id, r.job_type, CAST(r.payload AS jsonb),
         COALESCE(r.scheduled_at, COALESCE(CAST(:now AS timestamptz), now())),
         r.max_attempts, r.backoff_base_seconds, r.backoff_cap_seconds, r.lease_seconds, r.priority,
         r.idempotency_key,
         COALESCE(CAST(:now AS timestamptz), now()), COALESCE(CAST(:now AS timestamptz), now()),
         r.concurrency_key
  FROM json_to_recordset(CAST(:rows AS json)) AS r(
    ord integer, id uuid, job_type text, payload json, scheduled_at timestamptz, max_attempts integer,
    backoff_base_seconds integer, backoff_cap_seconds integer, lease_seconds integer, priority integer,
    idempotency_key text, concurrency_key text)
  ORDER BY r.ord
  ON CONFLICT (job_type, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
  RETURNING id, idempotency_key, created_at
), keyed AS (
  SELECT id, (row_number() OVER () - 1) / 1000 AS chunk FROM inserted WHERE idempotency_key IS NOT NULL
)
SELECT 0 AS part, (SELECT count(*) FROM inserted)::integer AS inserted,
       (SELECT min(created_at) FROM inserted) AS created_at, NULL::text AS keyed_ids
UNION ALL
SELECT (1 + chunk)::integer, NULL, NULL, json_agg(id)::text FROM keyed GROUP BY chunk
ORDER BY part`;

/**
 * Inserts ONE job (the common case: an API request enqueues one), skipping it if its (type, key) exists:
 * no row comes back then. The same row as `insertJobsSql` makes, in plain parameters: unpacking a
 * one-element JSON array and building the batch answer is most of a single enqueue's server time
 * (docs/performance.md).
 */
export const insertJobSql = `
INSERT INTO jobs (id, job_type, payload, scheduled_at, max_attempts, backoff_base_seconds,
                  backoff_cap_seconds, lease_seconds, priority, idempotency_key, created_at, updated_at,
                  concurrency_key)
VALUES (CAST(:id AS uuid), CAST(:job_type AS text), CAST(:payload AS jsonb),
        COALESCE(CAST(:scheduled_at AS timestamptz), COALESCE(CAST(:now AS timestamptz), now())),
        CAST(:max_attempts AS integer), CAST(:backoff_base_seconds AS integer),
        CAST(:backoff_cap_seconds AS integer), CAST(:lease_seconds AS integer), CAST(:priority AS integer),
        CAST(:idempotency_key AS text),
        COALESCE(CAST(:now AS timestamptz), now()), COALESCE(CAST(:now AS timestamptz), now()),
        CAST(:concurrency_key AS text))
ON CONFLICT (job_type, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING created_at`;

/**
 * Inserts ONE job already claimed and begun (attempt 1, running, leased from now): a local worker's eager
 * start, where the process that enqueues a due job has a free slot and runs it as soon as this commits.
 * One commit instead of an insert and a claim, and none of the other workers is woken for it (the insert
 * trigger notifies only for ready rows). A (type, key) that already exists is skipped, as in the insert;
 * so is a job of a paused type (`job_type_pauses`): it is a claim too, and no claim takes a paused type's
 * jobs (the caller then enqueues it to wait). It returns only the statement's time: the start and the lease
 * follow from it (one instant per statement), and every timestamp more to format and parse would be paid by
 * every eager start.
 */
export const insertStartedJobSql = `
INSERT INTO jobs (id, job_type, payload, scheduled_at, max_attempts, backoff_base_seconds,
                  backoff_cap_seconds, lease_seconds, priority, idempotency_key, created_at, updated_at,
                  status, attempts, claimed_at, started_at, lease_expires_at)
SELECT CAST(:id AS uuid), CAST(:job_type AS text), CAST(:payload AS jsonb),
       COALESCE(CAST(:scheduled_at AS timestamptz), COALESCE(CAST(:now AS timestamptz), now())),
       CAST(:max_attempts AS integer), CAST(:backoff_base_seconds AS integer),
       CAST(:backoff_cap_seconds AS integer), CAST(:lease_seconds AS integer), CAST(:priority AS integer),
       CAST(:idempotency_key AS text),
       COALESCE(CAST(:now AS timestamptz), now()), COALESCE(CAST(:now AS timestamptz), now()),
       'running', 1,
       COALESCE(CAST(:now AS timestamptz), now()), COALESCE(CAST(:now AS timestamptz), now()),
       COALESCE(CAST(:now AS timestamptz), now()) + make_interval(secs => CAST(:lease_seconds AS integer))
WHERE NOT EXISTS (SELECT 1 FROM job_type_pauses WHERE job_type = CAST(:job_type AS text))
ON CONFLICT (job_type, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING created_at`;

/**
 * As `insertStartedJobSql`, for a job of a type with a concurrency limit whose worker holds no slot of it
 * that no job uses: the same statement takes a free slot of the type (:max_running of them, SKIP LOCKED,
 * as a claim takes them) for the worker :worker, held for :slot_lease_seconds, and inserts the job only
 * if it took one. Nothing is written when no slot is free, the type is paused or the (type, key) exists
 * (the slot is taken only with the job): the caller then enqueues the job to wait for a claim. So a job
 * enqueued beside an idle worker starts after one commit however long since the type's last job, and the
 * limit holds across processes, because the slot is the worker's from then on (it gives it up as it gives
 * up any: `settleWorkerSlotsSql`).
 */
export const insertStartedJobTakingSlotSql = `
WITH free AS (
  SELECT job_type, slot FROM job_slots
  WHERE job_type = CAST(:job_type AS text) AND slot < CAST(:max_running AS integer)
    AND (holder IS NULL OR expires_at <= COALESCE(CAST(:now AS timestamptz), now()))
  ORDER BY slot LIMIT 1
  FOR UPDATE SKIP LOCKED
), inserted AS (
  INSERT INTO jobs (id, job_type, payload, scheduled_at, max_attempts, backoff_base_seconds,
                    backoff_cap_seconds, lease_seconds, priority, idempotency_key, created_at, updated_at,
                    status, attempts, claimed_at, started_at, lease_expires_at)
  SELECT CAST(:id AS uuid), CAST(:job_type AS text), CAST(:payload AS jsonb),
         COALESCE(CAST(:scheduled_at AS timestamptz), COALESCE(CAST(:now AS timestamptz), now())),
         CAST(:max_attempts AS integer), CAST(:backoff_base_seconds AS integer),
         CAST(:backoff_cap_seconds AS integer), CAST(:lease_seconds AS integer), CAST(:priority AS integer),
         CAST(:idempotency_key AS text),
         COALESCE(CAST(:now AS timestamptz), now()), COALESCE(CAST(:now AS timestamptz), now()),
         'running', 1,
         COALESCE(CAST(:now AS timestamptz), now()), COALESCE(CAST(:now AS timestamptz), now()),
         COALESCE(CAST(:now AS timestamptz), now()) + make_interval(secs => CAST(:lease_seconds AS integer))
  WHERE EXISTS (SELECT 1 FROM free)
    AND NOT EXISTS (SELECT 1 FROM job_type_pauses WHERE job_type = CAST(:job_type AS text))
  ON CONFLICT (job_type, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
  RETURNING created_at
), took AS (
  UPDATE job_slots s
  SET holder = CAST(:worker AS uuid),
      expires_at = COALESCE(CAST(:now AS timestamptz), now())
                   + make_interval(secs => CAST(:slot_lease_seconds AS integer))
  FROM free f
  WHERE s.job_type = f.job_type AND s.slot = f.slot AND EXISTS (SELECT 1 FROM inserted)
  RETURNING 1
)
SELECT created_at, (SELECT count(*) FROM took)::integer AS took FROM inserted`;

/**
 * Inserts ONE due job and, in the same statement, claims its type's next due job for an executor (AWS's
 * quiet path, `AwsJobClient`): one call instead of an insert and a claim. The claim is fetch-ready's
 * (`lana_jobs_claim_slotted` for :job_type alone: the type's pause, rate and concurrency limits, a
 * dispatch lease, the attempt counted only when an executor begins it), and it sees the insert: the
 * volatile function's statements see what its calling statement wrote before it, and it is called only
 * after `inserted` is read to its end. It claims nothing when the insert was skipped (the (type, key)
 * exists), and then answers no row. Otherwise one row: the insert's time and the claimed job's columns
 * (NULL when none was claimed: no free slot, paused, over its rate), which may be an older due job of the
 * type than the one inserted (claim order holds). :claim_token marks the claim, so a statement sent
 * again after it committed finds the job its first run claimed (`claimLimitedSql`'s `prior`).
 */
export const insertJobAndClaimSql = `
WITH inserted AS (
  INSERT INTO jobs (id, job_type, payload, scheduled_at, max_attempts, backoff_base_seconds,
                    backoff_cap_seconds, lease_seconds, priority, idempotency_key, created_at, updated_at)
  VALUES (CAST(:id AS uuid), CAST(:job_type AS text), CAST(:payload AS jsonb),
          COALESCE(CAST(:scheduled_at AS timestamptz), COALESCE(CAST(:now AS timestamptz), now())),
          CAST(:max_attempts AS integer), CAST(:backoff_base_seconds AS integer),
          CAST(:backoff_cap_seconds AS integer), CAST(:lease_seconds AS integer), CAST(:priority AS integer),
          CAST(:idempotency_key AS text),
          COALESCE(CAST(:now AS timestamptz), now()), COALESCE(CAST(:now AS timestamptz), now()))
  ON CONFLICT (job_type, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
  RETURNING created_at
), claimed AS (
  SELECT c.* FROM (SELECT count(*) AS n FROM inserted) i
  CROSS JOIN LATERAL lana_jobs_claim_slotted(CAST(:limits AS jsonb), CAST(:job_type AS text),
    CASE WHEN i.n > 0 THEN 1 ELSE 0 END, COALESCE(CAST(:now AS timestamptz), now()), false,
    CAST(:dispatch_lease_seconds AS integer), CAST(:claim_token AS uuid), NULL, NULL, NULL, NULL) c
)
SELECT i.created_at AS enqueued_at, c.id, c.job_type, c.payload, c.attempts, c.max_attempts, c.priority,
       c.idempotency_key, c.scheduled_at, c.lease_expires_at
FROM inserted i LEFT JOIN claimed c ON true`;

/**
 * An insert of no rows, which writes nothing (no transaction id, no WAL). A session's first insert into
 * `jobs` plans against every index, compiles the insert trigger and plans its check of the inserted rows:
 * several times what the inserts after it cost (docs/performance.md). Run once per session ahead of time
 * (`JobTracker.warmUp`), it spares the first job a worker starts that cost. Statement triggers fire for no
 * rows too.
 */
export const warmUpInsertSql = `
INSERT INTO jobs (id, job_type, payload)
SELECT CAST(NULL AS uuid), CAST(NULL AS text), CAST(NULL AS jsonb) WHERE false
ON CONFLICT (job_type, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING`;

/** The creation time of each of the given job ids that exists (:ids, one JSON array). */
export const jobsCreatedByIdSql = `
SELECT id::text AS id, created_at FROM jobs
WHERE id IN (SELECT CAST(value AS uuid) FROM json_array_elements_text(CAST(:ids AS json)))`;

/** The jobs already holding some (type, key) pairs. */
export const jobsByIdempotencyKeySql = `
SELECT id, job_type, payload, status, attempts, max_attempts, priority, idempotency_key,
  scheduled_at, started_at, completed_at, lease_expires_at, last_error, created_at, updated_at FROM jobs
WHERE (job_type, idempotency_key) IN (
  SELECT k.job_type, k.idempotency_key
  FROM jsonb_to_recordset(CAST(:keys AS jsonb)) AS k(job_type text, idempotency_key text))`;

/**
 * Enqueues ONE debounced job (`debounce: { key, windowSeconds, maxWaitSeconds }`): inserted due at the end
 * of its window, unless the type has a pending job with this key that no claim has taken yet
 * (`jobs_debounce_idx`, migration 0019); that job then takes this payload (and its concurrency key),
 * priority and attempt budget, and its run time moves to the end of this window, but never past the
 * deadline its burst's first enqueue set (`debounce_until`). One statement, arbitrated by the unique index: concurrent enqueues with one key leave
 * one pending job, and an enqueue racing the claim either pushes the job before the claim takes it or,
 * once the claim committed, finds no pending job and starts a new burst. `created` says whether the row
 * is this call's. A resend of this statement after its first send committed an insert (the Data API's
 * client sends again when an answer is lost) finds the row by its id (`own`) and answers with it, even if
 * a claim took it in between. Scheduled ahead, the insert wakes no worker (the trigger notifies only due
 * rows).
 */
export const upsertDebouncedJobSql = `
WITH own AS (
  SELECT id, job_type, payload, status, attempts, max_attempts, priority, idempotency_key,
    scheduled_at, started_at, completed_at, lease_expires_at, last_error, created_at, updated_at,
    true AS created
  FROM jobs WHERE id = CAST(:id AS uuid)
), upserted AS (
  INSERT INTO jobs (id, job_type, payload, scheduled_at, max_attempts, backoff_base_seconds,
                    backoff_cap_seconds, lease_seconds, priority, debounce_key, debounce_until,
                    created_at, updated_at, concurrency_key)
  SELECT CAST(:id AS uuid), CAST(:job_type AS text), CAST(:payload AS jsonb),
         COALESCE(CAST(:now AS timestamptz), now()) + make_interval(secs => CAST(:window_seconds AS integer)),
         CAST(:max_attempts AS integer), CAST(:backoff_base_seconds AS integer),
         CAST(:backoff_cap_seconds AS integer), CAST(:lease_seconds AS integer), CAST(:priority AS integer),
         CAST(:debounce_key AS text),
         COALESCE(CAST(:now AS timestamptz), now()) + make_interval(secs => CAST(:max_wait_seconds AS integer)),
         COALESCE(CAST(:now AS timestamptz), now()), COALESCE(CAST(:now AS timestamptz), now()),
         CAST(:concurrency_key AS text)
  WHERE NOT EXISTS (SELECT 1 FROM own)
  ON CONFLICT (job_type, debounce_key) WHERE debounce_key IS NOT NULL AND status = 'pending' AND attempts = 0
  DO UPDATE SET payload = EXCLUDED.payload, priority = EXCLUDED.priority, max_attempts = EXCLUDED.max_attempts,
    concurrency_key = EXCLUDED.concurrency_key,
    scheduled_at = LEAST(EXCLUDED.scheduled_at, COALESCE(jobs.debounce_until, EXCLUDED.scheduled_at)),
    updated_at = EXCLUDED.updated_at
  RETURNING id, job_type, payload, status, attempts, max_attempts, priority, idempotency_key,
    scheduled_at, started_at, completed_at, lease_expires_at, last_error, created_at, updated_at,
    id = CAST(:id AS uuid) AS created
)
SELECT * FROM upserted
UNION ALL
SELECT * FROM own`;
