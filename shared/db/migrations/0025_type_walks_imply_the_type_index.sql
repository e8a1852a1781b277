-- The slotted claim's walk of the ready (type, priority) pairs reads `jobs_ready_type_idx` on PostgreSQL 17.
--
-- 0023 gave the type index the predicate `job_type IS NOT NULL`, which no claim of every type implies, and
-- 0024's walk said `job_type IS NOT NULL` itself to imply it. PostgreSQL 17 drops an `IS NOT NULL` on a
-- NOT NULL column before it plans, so there the walk no longer implied the predicate: it read every ready
-- job on another index and sorted them, in every limited claim of every type (AWS's fetch-ready as much as
-- a local worker's). A drain of 20,000 jobs through the embedded PostgreSQL 17 spent about 8 ms more per
-- claim of 1,000 than the unlimited claim. The walk now says `job_type >= ''` (true of every type name): a
-- strict comparison, which implies `IS NOT NULL` on every version and is never dropped. Otherwise as 0024.

CREATE OR REPLACE FUNCTION lana_jobs_claim_slotted(
  p_limits jsonb, p_only_type text, p_limit integer, p_now timestamptz, p_start_now boolean,
  p_dispatch_lease_seconds integer, p_claim_token uuid,
  p_worker uuid, p_worker_concurrency integer, p_in_hand jsonb, p_slot_lease_seconds integer
) RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_candidates jsonb := '[]'::jsonb;
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
  -- 0022: the due jobs a worker's claim may take of a type, counted before it takes more slots.
  v_due integer;
  v_slots integer[];
  v_released integer;
  v_rate jsonb;
  v_rate_slots integer[];
  -- 0018: the due jobs of a type with a per-key limit, locked by `lana_jobs_lock_keyed_due` in claim order
  -- (NULL for any other type: the claim reads them itself, as before).
  v_keyed tid[];
BEGIN
  IF p_limit > 0 THEN
    -- 0024: the ready (type, priority) pairs, each with its earliest job, in one statement: a loose scan of
    -- the type index, one descent per pair (it was a statement per type, per priority, per pause probe).
    IF p_only_type IS NULL THEN
      -- 0025: `job_type >= ''`, not `IS NOT NULL` (which PostgreSQL 17 drops): the type index's predicate.
      WITH RECURSIVE k AS (
        (SELECT j.job_type, j.priority, j.scheduled_at FROM jobs j
         WHERE j.status IN ('pending', 'retrying') AND j.job_type >= ''
         ORDER BY j.job_type, j.priority, j.scheduled_at LIMIT 1)
        UNION ALL
        SELECT n.job_type, n.priority, n.scheduled_at FROM k CROSS JOIN LATERAL (
          SELECT j.job_type, j.priority, j.scheduled_at FROM jobs j
          WHERE j.status IN ('pending', 'retrying') AND j.job_type >= ''
            AND (j.job_type, j.priority) > (k.job_type, k.priority)
          ORDER BY j.job_type, j.priority, j.scheduled_at LIMIT 1) n
      )
      SELECT COALESCE(jsonb_agg(jsonb_build_object(
               'job_type', k.job_type, 'priority', k.priority, 'scheduled_at', k.scheduled_at,
               'max_running', p_limits -> k.job_type)), '[]'::jsonb)
      INTO v_candidates
      FROM k
      WHERE k.scheduled_at <= p_now
        -- A paused type is no candidate.
        AND NOT EXISTS (SELECT 1 FROM job_type_pauses p WHERE p.job_type = k.job_type);
    ELSE
      WITH RECURSIVE k AS (
        (SELECT j.job_type, j.priority, j.scheduled_at FROM jobs j
         WHERE j.status IN ('pending', 'retrying') AND j.job_type = p_only_type
         ORDER BY j.priority, j.scheduled_at LIMIT 1)
        UNION ALL
        SELECT n.job_type, n.priority, n.scheduled_at FROM k CROSS JOIN LATERAL (
          SELECT j.job_type, j.priority, j.scheduled_at FROM jobs j
          WHERE j.status IN ('pending', 'retrying') AND j.job_type = p_only_type AND j.priority > k.priority
          ORDER BY j.priority, j.scheduled_at LIMIT 1) n
      )
      SELECT COALESCE(jsonb_agg(jsonb_build_object(
               'job_type', k.job_type, 'priority', k.priority, 'scheduled_at', k.scheduled_at,
               'max_running', p_limits -> k.job_type)), '[]'::jsonb)
      INTO v_candidates
      FROM k
      WHERE k.scheduled_at <= p_now
        AND NOT EXISTS (SELECT 1 FROM job_type_pauses p WHERE p.job_type = k.job_type);
    END IF;
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
            -- 0022: no more slots than the due jobs need (each of the type's due priorities read as a range
            -- of its ready index, at most v_room entries; jobs scheduled ahead are never read).
            SELECT COALESCE(sum(k.n), 0)::integer INTO v_due
            FROM jsonb_to_recordset(v_candidates) AS x(job_type text, priority integer)
            CROSS JOIN LATERAL (
              SELECT count(*) AS n FROM (
                SELECT 1 FROM jobs
                WHERE status IN ('pending', 'retrying') AND job_type = x.job_type AND priority = x.priority
                  AND scheduled_at <= p_now
                LIMIT v_room) d) k
            WHERE x.job_type = c.job_type;
            v_want := LEAST(p_worker_concurrency, v_in_hand + LEAST(v_room, v_due)) - v_held;
          END IF;
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

  -- 0025: a worker that holds nothing it would give up, and whose holds were confirmed recently enough that
  -- none needs renewing, says `"$settle": false`: the claim then writes and reads nothing more of its slots.
  IF p_worker IS NOT NULL AND COALESCE((p_in_hand ->> '$settle')::boolean, true) THEN
    -- Renew the slots the worker keeps (as many per type as it has jobs in hand, or one while the type
    -- lingers (0022), within its concurrency and the type's limit) and give up the rest.
    SELECT count(*) INTO v_released FROM lana_jobs_settle_worker_slots(
      p_worker, p_limits, p_worker_concurrency,
      (SELECT COALESCE(jsonb_object_agg(t.key, t.n), '{}'::jsonb) FROM (
         SELECT key, GREATEST(COALESCE(sum(n) FILTER (WHERE NOT lingers), 0),
                              COALESCE(max(n) FILTER (WHERE lingers), 0))::integer AS n
         FROM (SELECT key, value::integer AS n, false AS lingers FROM jsonb_each_text(p_in_hand)
               WHERE left(key, 1) <> '$'
               UNION ALL SELECT key, value::integer, false FROM jsonb_each_text(v_claimed)
               UNION ALL SELECT key, value::integer, true
                         FROM jsonb_each_text(COALESCE(p_in_hand -> '$linger', '{}'::jsonb))) e
         GROUP BY key) t),
      p_now, p_slot_lease_seconds) r WHERE r.given_up;
  END IF;
END;
$$;
