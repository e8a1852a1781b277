-- Flow control: per-type concurrency limits enforced by the claim, and leases that cover the run.

-- When the current attempt was handed out. The lease no longer says it: an AWS claim holds a short
-- dispatch lease that the executor's start renews to the run's lease. NULL on rows claimed before this
-- migration (their claim time is then derived from the lease, as before).
ALTER TABLE jobs ADD COLUMN claimed_at timestamptz;

-- Which call claimed, and which call finished, the current attempt: tokens made per call by drivers whose
-- client may send a statement again after it committed (the Data API's). A resent claim finds the jobs its
-- first run claimed and answers with them, instead of leaving them running with no event; a resent
-- completion or failure finds its own work and reports it, instead of "fenced out". Only such claims set
-- a token, so the index (running rows with a token) costs local workers nothing.
ALTER TABLE jobs ADD COLUMN claim_token uuid, ADD COLUMN finish_token uuid;
CREATE INDEX jobs_claim_token_idx ON jobs (claim_token) WHERE claim_token IS NOT NULL AND status = 'running';

-- An event that never reached its executor: the claim is handed back without counting an attempt.
ALTER TABLE job_executions DROP CONSTRAINT job_executions_outcome_check;
ALTER TABLE job_executions ADD CONSTRAINT job_executions_outcome_check
  CHECK (outcome IN ('completed', 'failed', 'retry_requested', 'interrupted', 'lease_expired', 'released',
                     'cancelled', 'undelivered'));

-- The ready jobs of one type, by priority then due time: the limited claim walks them type by type.
CREATE INDEX jobs_ready_type_idx ON jobs (job_type, priority, scheduled_at, id)
  WHERE status IN ('pending', 'retrying');

-- The claim when job types have concurrency limits (p_limits: {"type": max running, ...}; a type not
-- listed has none). A limit must hold across every claimer at once (fetch-ready runs, executors taking
-- their next job, local workers), so each limited type is claimed under a transaction-scoped advisory lock
-- and its running attempts are counted AFTER the lock is taken: a PL/pgSQL statement takes a fresh
-- snapshot, where a single SQL statement would count from the snapshot it took before it waited, and two
-- claimers would both see the same free slots. Locks are taken in type-name order, so two claimers never
-- wait on each other in a cycle. Types are served in the order of their best due job (priority, then due
-- time); within a type, jobs go by priority then due time, one range read per priority (as the plain
-- claim does), so jobs scheduled ahead are never read.
-- p_only_type restricts the claim to one type (an executor taking its type's next job).
-- p_start_now: the attempt begins at once (an in-process runner), leased for the type's run; otherwise
-- the claim holds a dispatch lease of p_dispatch_lease_seconds that the executor's start renews.
-- p_claim_token: the calling statement's token (see `claim_token`), or NULL.
CREATE FUNCTION lana_jobs_claim_limited(
  p_limits jsonb, p_only_type text, p_limit integer, p_now timestamptz, p_start_now boolean,
  p_dispatch_lease_seconds integer, p_claim_token uuid
) RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_candidates jsonb := '[]'::jsonb;
  v_type text;
  v_best record;
  c record;
  p record;
  v_room integer;
  v_running integer;
  v_taken integer := 0;
  v_rows integer;
  v_priority integer;
BEGIN
  IF p_limit <= 0 THEN RETURN; END IF;
  -- Each type with ready jobs (one index descent per type), and its best due job's priority and time.
  v_type := NULL;
  LOOP
    SELECT job_type INTO v_type FROM jobs
    WHERE status IN ('pending', 'retrying')
      AND (p_only_type IS NULL OR job_type = p_only_type)
      AND (v_type IS NULL OR job_type > v_type)
    ORDER BY job_type LIMIT 1;
    EXIT WHEN NOT FOUND;
    -- Walk the type's priorities, lowest first, to the first whose earliest job is due.
    SELECT priority, scheduled_at INTO v_best FROM jobs
    WHERE status IN ('pending', 'retrying') AND job_type = v_type
    ORDER BY priority, scheduled_at LIMIT 1;
    WHILE FOUND AND v_best.scheduled_at > p_now LOOP
      SELECT priority, scheduled_at INTO v_best FROM jobs
      WHERE status IN ('pending', 'retrying') AND job_type = v_type AND priority > v_best.priority
      ORDER BY priority, scheduled_at LIMIT 1;
    END LOOP;
    IF FOUND THEN
      v_candidates := v_candidates || jsonb_build_object(
        'job_type', v_type, 'priority', v_best.priority, 'scheduled_at', v_best.scheduled_at,
        'max_running', p_limits -> v_type);
    END IF;
    EXIT WHEN p_only_type IS NOT NULL;
  END LOOP;

  -- Lock the limited types that have due jobs, in name order.
  FOR c IN SELECT x.job_type FROM jsonb_to_recordset(v_candidates) AS x(job_type text, max_running integer)
           WHERE x.max_running IS NOT NULL ORDER BY x.job_type LOOP
    PERFORM pg_advisory_xact_lock(hashtextextended('lana_jobs.limit:' || c.job_type, 0));
  END LOOP;

  FOR c IN SELECT * FROM jsonb_to_recordset(v_candidates)
             AS x(job_type text, priority integer, scheduled_at timestamptz, max_running integer)
           ORDER BY x.priority, x.scheduled_at, x.job_type LOOP
    EXIT WHEN v_taken >= p_limit;
    v_room := p_limit - v_taken;
    IF c.max_running IS NOT NULL THEN
      SELECT count(*) INTO v_running FROM jobs
      WHERE status = 'running' AND lease_expires_at > p_now AND job_type = c.job_type;
      v_room := LEAST(v_room, c.max_running - v_running);
    END IF;
    CONTINUE WHEN v_room <= 0;
    -- One range read per priority that has due jobs, from the type's best one up.
    v_priority := c.priority;
    LOOP
      RETURN QUERY
      UPDATE jobs j
      SET status = 'running', attempts = j.attempts + 1, claimed_at = p_now, claim_token = p_claim_token,
          started_at = CASE WHEN p_start_now THEN p_now END,
          lease_expires_at = p_now + make_interval(secs =>
            CASE WHEN p_start_now THEN j.lease_seconds ELSE p_dispatch_lease_seconds END),
          updated_at = p_now
      WHERE j.ctid = ANY(ARRAY(
        SELECT ctid FROM jobs
        WHERE status IN ('pending', 'retrying') AND job_type = c.job_type AND priority = v_priority
          AND scheduled_at <= p_now
        ORDER BY scheduled_at, id
        LIMIT v_room
        FOR UPDATE SKIP LOCKED))
      RETURNING j.*;
      GET DIAGNOSTICS v_rows = ROW_COUNT;
      v_taken := v_taken + v_rows;
      v_room := v_room - v_rows;
      EXIT WHEN v_room <= 0;
      -- The next priority whose earliest job is due.
      LOOP
        SELECT priority, scheduled_at INTO v_best FROM jobs
        WHERE status IN ('pending', 'retrying') AND job_type = c.job_type AND priority > v_priority
        ORDER BY priority, scheduled_at LIMIT 1;
        EXIT WHEN NOT FOUND;
        v_priority := v_best.priority;
        EXIT WHEN v_best.scheduled_at <= p_now;
      END LOOP;
      EXIT WHEN NOT FOUND;
    END LOOP;
  END LOOP;
END;
$$;

-- The smallest version-7 id of a millisecond: ids begin with their creation time, so "jobs created since
-- t" is a primary-key range from lana_uuid_v7_floor(t) (the queue-state metrics read the last minute).
CREATE FUNCTION lana_uuid_v7_floor(t timestamptz) RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT encode(substring(int8send((extract(epoch FROM t) * 1000)::bigint) FROM 3) || '\x70000000000000000000'::bytea, 'hex')::uuid
$$;
