-- The job queue: one row per job, updated in place through its lifecycle.
CREATE TABLE jobs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  job_type text NOT NULL CHECK (length(job_type) BETWEEN 1 AND 100),
  payload jsonb NOT NULL DEFAULT '{}'::jsonb,
  status text NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'retrying', 'cancelled')),
  -- Attempts started so far; the claim increments it, so it doubles as the fencing token of the current attempt.
  attempts integer NOT NULL DEFAULT 0,
  max_attempts integer NOT NULL DEFAULT 6 CHECK (max_attempts BETWEEN 1 AND 10000),
  -- Attempts made before the last operator retry: the backoff exponent counts from here, so a job retried
  -- by hand starts again at 2 minutes while `attempts` keeps growing (it is the fencing token).
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
  CHECK ((status = 'running') = (lease_expires_at IS NOT NULL))
);

-- Exactly the claim's WHERE (partial predicate + scheduled_at range) and ORDER BY, so a claim reads the
-- first rows of the index and never sorts the queue.
CREATE INDEX jobs_ready_idx ON jobs (priority, scheduled_at, id) WHERE status IN ('pending', 'retrying');

-- The rescuer's scan: running jobs by lease expiry.
CREATE INDEX jobs_running_lease_idx ON jobs (lease_expires_at) WHERE status = 'running';

-- One job per (type, idempotency key), ever: a second enqueue returns the first job.
CREATE UNIQUE INDEX jobs_idempotency_key_idx ON jobs (job_type, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Operator listings (`jobs list --status`, retention by age).
CREATE INDEX jobs_status_updated_idx ON jobs (status, updated_at);

-- One row per attempt: the audit trail and the source of execution-time metrics.
CREATE TABLE job_executions (
  job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  attempt integer NOT NULL CHECK (attempt >= 1),
  -- When the claim handed the attempt out.
  claimed_at timestamptz NOT NULL,
  -- When an executor began it. NULL while the attempt is only claimed (the fan-out event is in flight);
  -- a second delivery of the same attempt finds it set and does nothing.
  started_at timestamptz,
  finished_at timestamptz,
  outcome text CHECK (outcome IN ('completed', 'failed', 'retry_requested', 'lease_expired', 'cancelled')),
  error text,
  duration_ms integer,
  PRIMARY KEY (job_id, attempt),
  CHECK ((finished_at IS NULL) = (outcome IS NULL))
);

CREATE INDEX job_executions_finished_idx ON job_executions (finished_at) WHERE finished_at IS NOT NULL;

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
