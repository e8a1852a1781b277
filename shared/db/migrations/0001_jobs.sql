-- Time-ordered UUIDs (version 7 layout: 48-bit Unix milliseconds, then random bits). New ids land at the
-- right edge of the primary-key index instead of on random pages, which keeps inserts and the claim's
-- key lookups in cache as history grows. (PostgreSQL 18 has uuidv7(); this works on 15 to 17.)
CREATE FUNCTION lana_uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid
$$;

-- The job queue: one row per job, updated in place through its lifecycle.
CREATE TABLE jobs (
  id uuid PRIMARY KEY DEFAULT lana_uuid_v7(),
  job_type text NOT NULL CHECK (length(job_type) BETWEEN 1 AND 100),
  payload jsonb NOT NULL DEFAULT '{}'::jsonb,
  status text NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'retrying', 'cancelled')),
  -- Attempts handed out so far; the claim increments it and nothing decrements it, so it is the fencing
  -- token of the current attempt.
  attempts integer NOT NULL DEFAULT 0,
  max_attempts integer NOT NULL DEFAULT 6 CHECK (max_attempts BETWEEN 1 AND 10000),
  -- Attempts that do not count toward the backoff exponent: those before the last operator retry (a job
  -- retried by hand starts again at 2 minutes) and claims released unstarted.
  attempt_offset integer NOT NULL DEFAULT 0 CHECK (attempt_offset >= 0),
  -- Backoff after failed attempt n: least(base * 2^n, cap) seconds. Defaults give 2, 4, 8, 16, 32 minutes.
  backoff_base_seconds integer NOT NULL DEFAULT 60 CHECK (backoff_base_seconds BETWEEN 0 AND 86400),
  backoff_cap_seconds integer NOT NULL DEFAULT 1920 CHECK (backoff_cap_seconds BETWEEN 0 AND 604800),
  -- How long an attempt may run before the rescuer treats its executor as lost.
  lease_seconds integer NOT NULL DEFAULT 900 CHECK (lease_seconds BETWEEN 1 AND 86400),
  -- Lower runs first.
  priority integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN -1000 AND 1000),
  idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
  scheduled_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  completed_at timestamptz,
  lease_expires_at timestamptz,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CHECK (attempts BETWEEN 0 AND max_attempts),
  -- The lease of the current (or, once finished, the last) attempt; it is only enforced while running.
  CHECK (status <> 'running' OR lease_expires_at IS NOT NULL)
);

-- Exactly the claim's WHERE (partial predicate + scheduled_at range) and ORDER BY, so a claim reads the
-- first rows of the index and never sorts the queue.
CREATE INDEX jobs_ready_idx ON jobs (priority, scheduled_at, id) WHERE status IN ('pending', 'retrying');

-- The rescuer's scan: running jobs by lease expiry.
CREATE INDEX jobs_running_lease_idx ON jobs (lease_expires_at) WHERE status = 'running';

-- Retention finds old finished jobs by completion time. BRIN: almost free to maintain on every completion,
-- and rows complete roughly in physical order.
CREATE INDEX jobs_completed_at_brin ON jobs USING brin (completed_at);

-- One job per (type, idempotency key), ever: a second enqueue returns the first job.
CREATE UNIQUE INDEX jobs_idempotency_key_idx ON jobs (job_type, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- One row per finished attempt, written once when the attempt ends (completed, failed, retry requested,
-- interrupted by a shutdown, lease expired, released unstarted, cancelled): the audit trail a bank needs and the source of
-- execution-time metrics. The attempt in progress lives on the job row (attempts, started_at, lease).
CREATE TABLE job_executions (
  -- No foreign key: rows are only ever written from the job row in the same statement, and a per-row
  -- FK check would cost a quarter of a batch completion. Retention deletes a job's rows with the job.
  job_id uuid NOT NULL,
  attempt integer NOT NULL CHECK (attempt >= 1),
  -- When the claim handed the attempt out.
  claimed_at timestamptz NOT NULL,
  -- When an executor began it (NULL: it never began, e.g. released or its event never arrived).
  started_at timestamptz,
  finished_at timestamptz NOT NULL,
  outcome text NOT NULL
    CHECK (outcome IN ('completed', 'failed', 'retry_requested', 'interrupted', 'lease_expired', 'released', 'cancelled')),
  error text,
  duration_ms integer,
  PRIMARY KEY (job_id, attempt)
);

-- Rows arrive in finished_at order, so a BRIN index serves time-window scans (stats, retention) at almost
-- no cost per insert.
CREATE INDEX job_executions_finished_idx ON job_executions USING brin (finished_at);

-- Wake idle local workers when due jobs are inserted: one notification per statement, not per row.
CREATE FUNCTION lana_jobs_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM inserted WHERE scheduled_at <= now()) THEN
    PERFORM pg_notify('lana_jobs', '');
  END IF;
  RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify_inserted
  AFTER INSERT ON jobs
  REFERENCING NEW TABLE AS inserted
  FOR EACH STATEMENT EXECUTE FUNCTION lana_jobs_notify_inserted();
