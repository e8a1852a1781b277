-- Concurrency limits kept by slot rows instead of a per-type advisory lock and a count of running jobs.
--
-- Migrations 0007 and 0012 kept a type's limit by taking a transaction-scoped advisory lock per type and
-- counting its running attempts: every claim of a type waited for every other claim of it, and the
-- all-types claim waited behind the busiest type (one stalled lock holder stopped every type). Now a
-- limited type has one row per slot in `job_slots`, and a claim takes free slot rows with
-- `FOR UPDATE SKIP LOCKED`: claimers of one type take different slots side by side, and a claimer never
-- waits for another, of its own type or any other. Whether a slot is free is read from the slot row alone
-- (no holder, or its hold expired), so the check is re-made on the row's newest version when it is locked:
-- two claimers can never both take one slot.
--
-- A slot is held in one of two ways:
-- - by a JOB (`holder` = the job's id, `jobs.slot` = the slot number): an AWS claim for an executor, or any
--   claim without a worker. The hold follows the job: its expiry is the job's lease (renewed when the
--   executor begins the attempt), and the slot is freed the moment the job stops running (completed,
--   failed, retried, handed back, rescued, cancelled), by the trigger below, in the statement that does it.
-- - by a local WORKER (`holder` = the worker's id): the worker runs at most as many of the type's jobs at
--   once as it holds slots, and may claim more of them ahead into its local queue, as it does for types
--   without a limit. Its claims renew the hold (it expires `p_slot_lease_seconds` after the last one) and
--   shrink it to what it has in hand; a slot it gives up wakes the other workers (NOTIFY).
--
-- Expand-only: `lana_jobs_claim_limited` stays for the previous release's code during a deploy.

ALTER TABLE jobs ADD COLUMN slot integer;
-- Claims of this job that no executor began before their dispatch lease expired ("undelivered"): bounded,
-- so a job whose events never arrive fails with that reason instead of cycling for ever.
ALTER TABLE jobs ADD COLUMN handbacks integer NOT NULL DEFAULT 0;

-- No index but the key: the table holds a row per slot of each limited type (tens of rows), its
-- updates stay HOT (no indexed column changes), and a worker's own slots are found by a scan of it.
CREATE TABLE job_slots (
  job_type text NOT NULL,
  slot integer NOT NULL CHECK (slot >= 0),
  holder uuid,
  expires_at timestamptz,
  PRIMARY KEY (job_type, slot)
) WITH (fillfactor = 50);

-- Per job type: claims handed back undelivered since one of its attempts last began. fetch-ready's
-- circuit breaker: at `lana_jobs_breaker_threshold()` or more, the type's claims let one probe through at
-- a time until an executor begins an attempt again.
CREATE TABLE job_type_dispatch (
  job_type text PRIMARY KEY,
  undelivered_streak integer NOT NULL DEFAULT 0,
  last_undelivered_at timestamptz
);

CREATE FUNCTION lana_jobs_breaker_threshold() RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT 3';

-- A job holding a slot keeps the slot's expiry at its lease, and frees the slot as it stops running.
-- BEFORE, so the slot is free for the rest of the same statement: an executor's completion and its next
-- claim are one statement, and the claim takes the slot the completion freed.
CREATE FUNCTION lana_jobs_slot_follows_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status = 'running' AND NEW.attempts = OLD.attempts AND NEW.slot IS NOT DISTINCT FROM OLD.slot THEN
    IF NEW.lease_expires_at IS DISTINCT FROM OLD.lease_expires_at THEN
      UPDATE job_slots SET expires_at = NEW.lease_expires_at
      WHERE job_type = OLD.job_type AND slot = OLD.slot AND holder = OLD.id;
    END IF;
  ELSE
    UPDATE job_slots SET holder = NULL, expires_at = NULL
    WHERE job_type = OLD.job_type AND slot = OLD.slot AND holder = OLD.id;
    IF NEW.slot IS NOT DISTINCT FROM OLD.slot THEN
      NEW.slot := NULL;
    END IF;
  END IF;
  RETURN NEW;
END;
$$;

CREATE TRIGGER jobs_slot_follows_job BEFORE UPDATE ON jobs
FOR EACH ROW WHEN (OLD.slot IS NOT NULL) EXECUTE FUNCTION lana_jobs_slot_follows_job();

-- A job deleted while it holds a slot frees it; emptying the table frees every slot and forgets every
-- breaker (no job holds anything any more).
CREATE FUNCTION lana_jobs_slot_freed_by_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE job_slots SET holder = NULL, expires_at = NULL
  WHERE job_type = OLD.job_type AND slot = OLD.slot AND holder = OLD.id;
  RETURN NULL;
END;
$$;
CREATE TRIGGER jobs_slot_freed_by_delete AFTER DELETE ON jobs
FOR EACH ROW WHEN (OLD.slot IS NOT NULL) EXECUTE FUNCTION lana_jobs_slot_freed_by_delete();

CREATE FUNCTION lana_jobs_slots_freed_by_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE job_slots SET holder = NULL, expires_at = NULL WHERE holder IS NOT NULL;
  DELETE FROM job_type_dispatch;
  RETURN NULL;
END;
$$;
CREATE TRIGGER jobs_slots_freed_by_truncate AFTER TRUNCATE ON jobs
FOR EACH STATEMENT EXECUTE FUNCTION lana_jobs_slots_freed_by_truncate();

-- The claim with concurrency limits (p_limits: {"type": max running, ...}; a type not listed has none).
-- A limited type's slot rows are made beforehand, in a statement of their own (`ensureSlotsSql`): an
-- insert here would wait for a claimer that inserted the same rows and has not committed.
--
-- Candidates are each (type, priority) whose earliest ready job is due, served by priority, then earliest
-- job, then type (as in 0012). A type without a limit is one range read of its due jobs. A limited type:
-- - p_worker NULL (fetch-ready, an executor's next job, any claim without a worker): each job takes a free
--   slot of its own, locked with SKIP LOCKED, so the claim never waits. While the type's circuit breaker
--   is open (see `job_type_dispatch`), at most one job is claimed, and none while an earlier probe waits
--   for its executor.
-- - p_worker set (a local worker; attempts begin at claim): the worker first tops up the slots it holds
--   for the type, to what it could run at once (its concurrency, or what it has in hand and could claim,
--   whichever is less), then claims jobs ahead in proportion to its slots (p_limit x held / concurrency,
--   at least enough to fill them). At the end every slot it holds is renewed or, beyond what it has in
--   hand (p_in_hand: {"type": jobs running or queued in the worker}), given up and the workers woken.
-- p_only_type restricts the claim to one type; p_start_now begins the attempts at once (leased for the
-- run) instead of holding a dispatch lease of p_dispatch_lease_seconds; p_claim_token marks the rows.
CREATE FUNCTION lana_jobs_claim_slotted(
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
BEGIN
  IF p_limit > 0 THEN
    v_type := NULL;
    LOOP
      SELECT job_type INTO v_type FROM jobs
      WHERE status IN ('pending', 'retrying')
        AND (p_only_type IS NULL OR job_type = p_only_type)
        AND (v_type IS NULL OR job_type > v_type)
      ORDER BY job_type LIMIT 1;
      EXIT WHEN NOT FOUND;
      v_priority := NULL;
      LOOP
        SELECT priority, scheduled_at INTO v_best FROM jobs
        WHERE status IN ('pending', 'retrying') AND job_type = v_type
          AND (v_priority IS NULL OR priority > v_priority)
        ORDER BY priority, scheduled_at LIMIT 1;
        EXIT WHEN NOT FOUND;
        v_priority := v_best.priority;
        IF v_best.scheduled_at <= p_now THEN
          v_candidates := v_candidates || jsonb_build_object(
            'job_type', v_type, 'priority', v_priority, 'scheduled_at', v_best.scheduled_at,
            'max_running', p_limits -> v_type);
        END IF;
      END LOOP;
      EXIT WHEN p_only_type IS NOT NULL;
    END LOOP;
  END IF;

  FOR c IN SELECT * FROM jsonb_to_recordset(v_candidates)
             AS x(job_type text, priority integer, scheduled_at timestamptz, max_running integer)
           ORDER BY x.priority, x.scheduled_at, x.job_type LOOP
    EXIT WHEN v_taken >= p_limit;
    v_room := p_limit - v_taken;

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
        RETURN QUERY
        WITH picked AS (
          SELECT p.ctid AS tid, row_number() OVER (ORDER BY p.scheduled_at, p.id) AS n
          FROM (SELECT ctid, scheduled_at, id FROM jobs
                WHERE status IN ('pending', 'retrying') AND job_type = c.job_type AND priority = c.priority
                  AND scheduled_at <= p_now
                ORDER BY scheduled_at, id
                LIMIT v_room
                FOR UPDATE SKIP LOCKED) p
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
            AND scheduled_at <= p_now
          ORDER BY scheduled_at, id
          LIMIT v_room
          FOR UPDATE SKIP LOCKED))
        RETURNING j.*;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        v_claimed := v_claimed || jsonb_build_object(c.job_type,
          COALESCE((v_claimed ->> c.job_type)::integer, 0) + v_rows);
      END IF;
      v_budget := v_budget || jsonb_build_object(c.job_type, (v_budget ->> c.job_type)::integer - v_rows);
    ELSE
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
          AND scheduled_at <= p_now
        ORDER BY scheduled_at, id
        LIMIT v_room
        FOR UPDATE SKIP LOCKED))
      RETURNING j.*;
      GET DIAGNOSTICS v_rows = ROW_COUNT;
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

-- Settles the slots a worker holds: per type, keeps min(p_keep[type], concurrency, the type's limit) of
-- them (renewed for p_slot_lease_seconds) and gives up the rest, waking the workers if any was given up.
-- A type without a limit any more keeps none. Returns each slot the worker held and whether it was given up.
CREATE FUNCTION lana_jobs_settle_worker_slots(
  p_worker uuid, p_limits jsonb, p_worker_concurrency integer, p_keep jsonb, p_now timestamptz,
  p_slot_lease_seconds integer
) RETURNS TABLE (slot_type text, slot_no integer, given_up boolean) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  r record;
  v_any boolean := false;
BEGIN
  FOR r IN
    WITH mine AS (
      SELECT s.job_type, s.slot,
             row_number() OVER (PARTITION BY s.job_type ORDER BY s.slot) AS n,
             LEAST(COALESCE((p_keep ->> s.job_type)::integer, 0), p_worker_concurrency,
                   COALESCE((p_limits ->> s.job_type)::integer, 0)) AS keep
      FROM job_slots s
      WHERE s.holder = p_worker
    ), settled AS (
      UPDATE job_slots s
      SET holder = CASE WHEN m.n <= m.keep AND s.slot < COALESCE((p_limits ->> s.job_type)::integer, 0)
                        THEN p_worker END,
          expires_at = CASE WHEN m.n <= m.keep AND s.slot < COALESCE((p_limits ->> s.job_type)::integer, 0)
                            THEN p_now + make_interval(secs => p_slot_lease_seconds) END
      FROM mine m
      WHERE s.job_type = m.job_type AND s.slot = m.slot AND s.holder = p_worker
      RETURNING s.job_type, s.slot, s.holder IS NULL AS released
    )
    SELECT * FROM settled
  LOOP
    slot_type := r.job_type;
    slot_no := r.slot;
    given_up := r.released;
    v_any := v_any OR r.released;
    RETURN NEXT;
  END LOOP;
  IF v_any THEN
    PERFORM pg_notify('lana_jobs', '');
  END IF;
END;
$$;

-- The slots a worker holds, per type (`{"type": n}`). PL/pgSQL (never inlined) and volatile, so a
-- statement that claimed first reads what its claim left; `p_after` only orders the call after the rows
-- it is given (their count).
CREATE FUNCTION lana_jobs_worker_slots(p_worker uuid, p_after bigint) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  RETURN (SELECT COALESCE(jsonb_object_agg(job_type, n), '{}'::jsonb)::text
          FROM (SELECT job_type, count(*)::integer AS n FROM job_slots WHERE holder = p_worker
                GROUP BY job_type) h);
END;
$$;
