-- Per-key concurrency (issue 27): a job type may take a key from its payload (`concurrencyKey: { field:
-- 'facilityId', limit: 1 }`) and run at most `limit` of its jobs with one key at once, across every claimer,
-- while jobs with other keys flow. The key is stored on the job at enqueue (`concurrency_key`, filled from
-- the payload by `shared/jobs/job-input.ts`); the claims take the limits as `"$keys": {"type": limit}` in
-- p_limits (no job type can be named so; code of the previous release never sends it).
--
-- How a claim keeps the limit without waiting for another claim: before it takes a job with key K, it
-- takes K's transaction-scoped advisory lock with pg_try_advisory_xact_lock, which never waits (a key held
-- by another claim in progress is passed over by this claim, as SKIP LOCKED passes a row), and then, in a
-- statement of its own, counts K's running jobs (leases not expired, as a slot's hold); it takes at most the
-- limit less that count. Race-free under READ COMMITTED: two claims of K never hold its lock at once, the
-- later one takes it only after the earlier one committed or rolled back, and a PL/pgSQL statement of a
-- volatile function takes a fresh snapshot, so the count is made on a snapshot that holds every claim of K
-- that committed before. A job ending (completed, failed, retried, handed back, rescued, cancelled) frees
-- its key by leaving `running` or by its lease expiring: nothing else to write, nothing to lose in a crash
-- (the lock dies with the transaction). Under REPEATABLE READ the count would read the transaction's first
-- snapshot, so such a claim is refused with an error rather than run unsafely. A key already at its limit
-- by a count made before the lock is passed over without locking it (passing over is always safe), so a
-- claim holds about as many key locks as it takes jobs. The lock is a 64-bit hash of type and key: two keys
-- sharing one would only be passed over together while a claim holds it.
--
-- A job whose key is at its limit stays due, with no attempt counted, and the claim goes on to the next due
-- job (`lana_jobs_lock_keyed_due`). A keyed type's claim therefore reads past the due jobs of keys at their
-- limit (a count per such key, a look-up per such job). Jobs without a key (the payload has no such field)
-- are claimed as any job of their type.

ALTER TABLE jobs ADD COLUMN concurrency_key text;
-- Every existing row has no key: NOT VALID spares a scan of the table under its lock; new rows are checked.
ALTER TABLE jobs ADD CONSTRAINT jobs_concurrency_key_length
  CHECK (length(concurrency_key) BETWEEN 1 AND 200) NOT VALID;
-- A key's running jobs, counted by the claim. Only keyed rows are in it, and no statement without a key
-- condition can use it (its predicate names the key), so the queue's cached plans are untouched.
CREATE INDEX jobs_running_key_idx ON jobs (job_type, concurrency_key)
  WHERE status = 'running' AND concurrency_key IS NOT NULL;

-- Locks up to p_room due jobs of (p_type, p_priority), in claim order (due time, then id), keeping at most
-- p_key_limit running per key; returns their row addresses. Jobs without a key are taken as they come.
-- A key whose lock another claim holds, or that is at its limit, is passed over, its jobs left due.
CREATE FUNCTION lana_jobs_lock_keyed_due(
  p_type text, p_priority integer, p_now timestamptz, p_room integer, p_key_limit integer
) RETURNS tid[] LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_tids tid[] := '{}';
  -- Per key met: how many more of its jobs this claim may take.
  v_left jsonb := '{}'::jsonb;
  v_n integer;
  v_tid tid;
  r record;
BEGIN
  IF current_setting('transaction_isolation') NOT IN ('read committed', 'read uncommitted') THEN
    RAISE EXCEPTION 'a claim of job type % (per-key limit) needs READ COMMITTED, not %', p_type,
      current_setting('transaction_isolation')
      USING ERRCODE = 'feature_not_supported';
  END IF;
  FOR r IN
    SELECT id, concurrency_key FROM jobs
    WHERE status IN ('pending', 'retrying') AND job_type = p_type AND priority = p_priority
      AND scheduled_at <= p_now
    ORDER BY scheduled_at, id
  LOOP
    EXIT WHEN cardinality(v_tids) >= p_room;
    IF r.concurrency_key IS NOT NULL THEN
      IF NOT v_left ? r.concurrency_key THEN
        -- First without the lock: a key at its limit is passed over without taking its lock, so a claim
        -- holds the locks of about as many keys as it takes jobs of, however many keys are at their limit.
        SELECT count(*)::integer INTO v_n FROM jobs
        WHERE status = 'running' AND job_type = p_type AND concurrency_key = r.concurrency_key
          AND lease_expires_at > p_now;
        IF v_n < p_key_limit AND pg_try_advisory_xact_lock(
             hashtextextended('lana_jobs.key:' || p_type || ':' || r.concurrency_key, 0)) THEN
          -- Again in a statement of its own, whose snapshot is taken after the lock was granted.
          SELECT p_key_limit - count(*)::integer INTO v_n FROM jobs
          WHERE status = 'running' AND job_type = p_type AND concurrency_key = r.concurrency_key
            AND lease_expires_at > p_now;
        ELSE
          v_n := 0;
        END IF;
        v_left := v_left || jsonb_build_object(r.concurrency_key, v_n);
      END IF;
      CONTINUE WHEN (v_left ->> r.concurrency_key)::integer <= 0;
    END IF;
    -- The row's newest version, locked unless another claimer holds it; still due, and still this key.
    SELECT ctid INTO v_tid FROM jobs
    WHERE id = r.id AND status IN ('pending', 'retrying') AND job_type = p_type AND priority = p_priority
      AND scheduled_at <= p_now AND concurrency_key IS NOT DISTINCT FROM r.concurrency_key
    FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
      v_tids := v_tids || v_tid;
      IF r.concurrency_key IS NOT NULL THEN
        v_left := v_left
          || jsonb_build_object(r.concurrency_key, (v_left ->> r.concurrency_key)::integer - 1);
      END IF;
    END IF;
  END LOOP;
  RETURN v_tids;
END;
$$;

-- As in migration 0016, with the per-key limits kept: each change is marked "0018" or names v_keyed. For a
-- type with a per-key limit, the due jobs of a candidate are locked by `lana_jobs_lock_keyed_due` once the
-- claim knows how many it may take (after the rate and concurrency slots); every other type's are read as
-- before (`v_keyed IS NULL`, a one-time test in the cached plans).
CREATE OR REPLACE FUNCTION lana_jobs_claim_slotted(
  p_limits jsonb, p_only_type text, p_limit integer, p_now timestamptz, p_start_now boolean,
  p_dispatch_lease_seconds integer, p_claim_token uuid,
  p_worker uuid, p_worker_concurrency integer, p_in_hand jsonb, p_slot_lease_seconds integer
) RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_candidates jsonb := '[]'::jsonb;
  v_type text;
  v_best record;
  v_priority integer;
  c record;
  v_room integer;
  v_taken integer := 0;
  v_rows integer;
  -- Per limited type met: how many more of its jobs this claim may take.
  v_budget jsonb := '{}'::jsonb;
  -- Per limited type: jobs this claim took (a worker keeps slots for them).
  v_claimed jsonb := '{}'::jsonb;
  v_type_budget integer;
  v_held integer;
  v_want integer;
  v_in_hand integer;
  v_slots integer[];
  v_released integer;
  v_rate jsonb;
  v_rate_slots integer[];
  -- 0018: the due jobs of a type with a per-key limit, locked by `lana_jobs_lock_keyed_due` in claim order
  -- (NULL for any other type: the claim reads them itself, as before).
  v_keyed tid[];
BEGIN
  IF p_limit > 0 THEN
    v_type := NULL;
    LOOP
      IF p_only_type IS NOT NULL THEN
        -- One type: the walk of its priorities below finds whether it has ready jobs.
        v_type := p_only_type;
      ELSE
        SELECT job_type INTO v_type FROM jobs
        WHERE status IN ('pending', 'retrying') AND job_type > COALESCE(v_type, '')
        ORDER BY job_type LIMIT 1;
        EXIT WHEN NOT FOUND;
      END IF;
      -- A paused type is no candidate: one probe of the paused types' key per type with ready jobs.
      IF NOT EXISTS (SELECT 1 FROM job_type_pauses WHERE job_type = v_type) THEN
        v_priority := NULL;
        LOOP
          SELECT priority, scheduled_at INTO v_best FROM jobs
          WHERE status IN ('pending', 'retrying') AND job_type = v_type
            AND priority > COALESCE(v_priority, -2147483648)
          ORDER BY priority, scheduled_at LIMIT 1;
          EXIT WHEN NOT FOUND;
          v_priority := v_best.priority;
          IF v_best.scheduled_at <= p_now THEN
            v_candidates := v_candidates || jsonb_build_object(
              'job_type', v_type, 'priority', v_priority, 'scheduled_at', v_best.scheduled_at,
              'max_running', p_limits -> v_type);
          END IF;
        END LOOP;
      END IF;
      EXIT WHEN p_only_type IS NOT NULL;
    END LOOP;
  END IF;

  FOR c IN SELECT * FROM jsonb_to_recordset(v_candidates)
             AS x(job_type text, priority integer, scheduled_at timestamptz, max_running integer)
           ORDER BY x.priority, x.scheduled_at, x.job_type LOOP
    EXIT WHEN v_taken >= p_limit;
    v_room := p_limit - v_taken;

    -- A rate-limited type: one rate slot per job, among those last used at least perSeconds ago.
    v_rate := p_limits -> '$rates' -> c.job_type;
    IF v_rate IS NOT NULL THEN
      v_rate_slots := ARRAY(
        SELECT slot FROM job_rate_slots
        WHERE job_type = c.job_type AND slot < (v_rate ->> 0)::integer
          AND (last_used_at IS NULL
               OR last_used_at <= p_now - make_interval(secs => (v_rate ->> 1)::double precision))
        ORDER BY slot LIMIT v_room
        FOR UPDATE SKIP LOCKED);
      v_room := COALESCE(cardinality(v_rate_slots), 0);
      CONTINUE WHEN v_room = 0;
    END IF;

    IF c.max_running IS NOT NULL THEN
      IF NOT v_budget ? c.job_type THEN
        IF p_worker IS NULL THEN
          v_type_budget := p_limit;
          IF NOT p_start_now AND EXISTS (
            SELECT 1 FROM job_type_dispatch
            WHERE job_type = c.job_type AND undelivered_streak >= lana_jobs_breaker_threshold()
          ) THEN
            -- The breaker is open: one probe at a time.
            v_type_budget := CASE WHEN EXISTS (
              SELECT 1 FROM jobs WHERE status = 'running' AND job_type = c.job_type AND started_at IS NULL
                AND lease_expires_at > p_now) THEN 0 ELSE 1 END;
          END IF;
        ELSE
          v_in_hand := COALESCE((p_in_hand ->> c.job_type)::integer, 0);
          SELECT count(*) INTO v_held FROM job_slots
          WHERE job_type = c.job_type AND holder = p_worker AND slot < c.max_running;
          v_want := LEAST(p_worker_concurrency, v_in_hand + v_room) - v_held;
          IF v_want > 0 THEN
            WITH free AS (
              SELECT job_type, slot FROM job_slots
              WHERE job_type = c.job_type AND slot < c.max_running AND (holder IS NULL OR expires_at <= p_now)
                AND holder IS DISTINCT FROM p_worker
              ORDER BY slot LIMIT v_want
              FOR UPDATE SKIP LOCKED
            ), took AS (
              UPDATE job_slots s SET holder = p_worker,
                     expires_at = p_now + make_interval(secs => p_slot_lease_seconds)
              FROM free f WHERE s.job_type = f.job_type AND s.slot = f.slot
              RETURNING 1
            )
            SELECT count(*) INTO v_rows FROM took;
            v_held := v_held + v_rows;
          END IF;
          v_type_budget := CASE WHEN v_held = 0 THEN 0
            ELSE GREATEST(v_held - v_in_hand, ceil(p_limit::numeric * v_held / p_worker_concurrency)::integer)
          END;
        END IF;
        v_budget := v_budget || jsonb_build_object(c.job_type, v_type_budget);
      END IF;
      v_room := LEAST(v_room, (v_budget ->> c.job_type)::integer);
      CONTINUE WHEN v_room <= 0;

      IF p_worker IS NULL THEN
        -- One free slot per job: SKIP LOCKED, so claimers of this type take different slots at once.
        v_slots := ARRAY(
          SELECT slot FROM job_slots
          WHERE job_type = c.job_type AND slot < c.max_running AND (holder IS NULL OR expires_at <= p_now)
          ORDER BY slot LIMIT v_room
          FOR UPDATE SKIP LOCKED);
        v_room := COALESCE(cardinality(v_slots), 0);
        IF v_room = 0 THEN
          v_budget := v_budget || jsonb_build_object(c.job_type, 0);
          CONTINUE;
        END IF;
        v_keyed := CASE WHEN p_limits -> '$keys' ? c.job_type THEN lana_jobs_lock_keyed_due(
          c.job_type, c.priority, p_now, v_room, (p_limits -> '$keys' ->> c.job_type)::integer) END;
        RETURN QUERY
        WITH picked AS (
          SELECT p.ctid AS tid, row_number() OVER (ORDER BY p.scheduled_at, p.id) AS n
          FROM (SELECT * FROM (SELECT ctid, scheduled_at, id FROM jobs
                WHERE status IN ('pending', 'retrying') AND job_type = c.job_type AND priority = c.priority
                  AND scheduled_at <= p_now AND v_keyed IS NULL
                ORDER BY scheduled_at, id
                LIMIT v_room
                FOR UPDATE SKIP LOCKED) d
                UNION ALL SELECT ctid, scheduled_at, id FROM jobs WHERE ctid = ANY(v_keyed)) p
        ), claimed AS (
          UPDATE jobs j
          SET status = 'running', attempts = j.attempts + 1, claimed_at = p_now, claim_token = p_claim_token,
              started_at = CASE WHEN p_start_now THEN p_now END,
              lease_expires_at = p_now + make_interval(secs =>
                CASE WHEN p_start_now THEN j.lease_seconds ELSE p_dispatch_lease_seconds END),
              updated_at = p_now, slot = v_slots[k.n]
          FROM picked k
          WHERE j.ctid = k.tid
          RETURNING j.*
        ), held AS (
          UPDATE job_slots s SET holder = cl.id, expires_at = cl.lease_expires_at
          FROM claimed cl WHERE s.job_type = cl.job_type AND s.slot = cl.slot
        )
        SELECT * FROM claimed;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
      ELSE
        v_keyed := CASE WHEN p_limits -> '$keys' ? c.job_type THEN lana_jobs_lock_keyed_due(
          c.job_type, c.priority, p_now, v_room, (p_limits -> '$keys' ->> c.job_type)::integer) END;
        RETURN QUERY
        UPDATE jobs j
        SET status = 'running', attempts = j.attempts + 1, claimed_at = p_now, claim_token = p_claim_token,
            started_at = CASE WHEN p_start_now THEN p_now END,
            lease_expires_at = p_now + make_interval(secs =>
              CASE WHEN p_start_now THEN j.lease_seconds ELSE p_dispatch_lease_seconds END),
            updated_at = p_now
        WHERE j.ctid = ANY(ARRAY(
          SELECT ctid FROM jobs
          WHERE status IN ('pending', 'retrying') AND job_type = c.job_type AND priority = c.priority
            AND scheduled_at <= p_now AND v_keyed IS NULL
          ORDER BY scheduled_at, id
          LIMIT v_room
          FOR UPDATE SKIP LOCKED) || v_keyed)
        RETURNING j.*;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        v_claimed := v_claimed || jsonb_build_object(c.job_type,
          COALESCE((v_claimed ->> c.job_type)::integer, 0) + v_rows);
      END IF;
      v_budget := v_budget || jsonb_build_object(c.job_type, (v_budget ->> c.job_type)::integer - v_rows);
    ELSE
      v_keyed := CASE WHEN p_limits -> '$keys' ? c.job_type THEN lana_jobs_lock_keyed_due(
        c.job_type, c.priority, p_now, v_room, (p_limits -> '$keys' ->> c.job_type)::integer) END;
      RETURN QUERY
      UPDATE jobs j
      SET status = 'running', attempts = j.attempts + 1, claimed_at = p_now, claim_token = p_claim_token,
          started_at = CASE WHEN p_start_now THEN p_now END,
          lease_expires_at = p_now + make_interval(secs =>
            CASE WHEN p_start_now THEN j.lease_seconds ELSE p_dispatch_lease_seconds END),
          updated_at = p_now
      WHERE j.ctid = ANY(ARRAY(
        SELECT ctid FROM jobs
        WHERE status IN ('pending', 'retrying') AND job_type = c.job_type AND priority = c.priority
          AND scheduled_at <= p_now AND v_keyed IS NULL
        ORDER BY scheduled_at, id
        LIMIT v_room
        FOR UPDATE SKIP LOCKED) || v_keyed)
      RETURNING j.*;
      GET DIAGNOSTICS v_rows = ROW_COUNT;
    END IF;
    IF v_rate IS NOT NULL AND v_rows > 0 THEN
      UPDATE job_rate_slots SET last_used_at = p_now
      WHERE job_type = c.job_type AND slot = ANY(v_rate_slots[1:v_rows]);
    END IF;
    v_taken := v_taken + v_rows;
  END LOOP;

  IF p_worker IS NOT NULL THEN
    -- Renew the slots the worker keeps (as many per type as it has jobs in hand, within its concurrency
    -- and the type's limit) and give up the rest.
    SELECT count(*) INTO v_released FROM lana_jobs_settle_worker_slots(
      p_worker, p_limits, p_worker_concurrency,
      (SELECT COALESCE(jsonb_object_agg(t.key, t.n), '{}'::jsonb) FROM (
         SELECT key, sum(value::integer)::integer AS n
         FROM (SELECT * FROM jsonb_each_text(p_in_hand) UNION ALL SELECT * FROM jsonb_each_text(v_claimed)) e
         GROUP BY key) t),
      p_now, p_slot_lease_seconds) r WHERE r.given_up;
  END IF;
END;
$$;
