-- The limited claim serves priorities first, across types.
--
-- Migration 0007's lana_jobs_claim_limited served a type's due jobs of every priority before the next
-- type's: with a claim smaller than the due jobs (a local worker with three free slots, an executor's
-- budget), type A's priority-5 jobs could be claimed ahead of type B's priority-1 jobs. Now each
-- (type, priority) that has due jobs is a candidate, and candidates are served by priority, then by
-- their earliest due job, then by type name: no job is claimed while a job of a better priority that
-- the claim could take is left waiting. Within one priority, types still go one after another (by their
-- earliest due job), each as one range read; a strict merge by due time would have to read and lock
-- more rows than the claim keeps.
--
-- Everything else is as in 0007: a limited type is claimed under its transaction-scoped advisory lock,
-- taken in type-name order before any row, and its running attempts are counted after the lock (a
-- PL/pgSQL statement takes a fresh snapshot), once per type, the claim's own rows then subtracted as it
-- takes them. Same signature and result, so code of the previous release calls it unchanged.
CREATE OR REPLACE FUNCTION lana_jobs_claim_limited(
  p_limits jsonb, p_only_type text, p_limit integer, p_now timestamptz, p_start_now boolean,
  p_dispatch_lease_seconds integer, p_claim_token uuid
) RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_candidates jsonb := '[]'::jsonb;
  v_free jsonb := '{}'::jsonb;
  v_type text;
  v_best record;
  v_priority integer;
  c record;
  v_room integer;
  v_type_free integer;
  v_running integer;
  v_taken integer := 0;
  v_rows integer;
BEGIN
  IF p_limit <= 0 THEN RETURN; END IF;
  -- Each type with ready jobs (one index descent per type) and, for each of its priorities, the earliest
  -- job (one descent per priority): the (type, priority) pairs whose earliest job is due are candidates.
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

  -- Lock the limited types that have due jobs, in name order.
  FOR c IN SELECT DISTINCT x.job_type FROM jsonb_to_recordset(v_candidates) AS x(job_type text, max_running integer)
           WHERE x.max_running IS NOT NULL ORDER BY x.job_type LOOP
    PERFORM pg_advisory_xact_lock(hashtextextended('lana_jobs.limit:' || c.job_type, 0));
  END LOOP;

  FOR c IN SELECT * FROM jsonb_to_recordset(v_candidates)
             AS x(job_type text, priority integer, scheduled_at timestamptz, max_running integer)
           ORDER BY x.priority, x.scheduled_at, x.job_type LOOP
    EXIT WHEN v_taken >= p_limit;
    v_room := p_limit - v_taken;
    IF c.max_running IS NOT NULL THEN
      IF v_free ? c.job_type THEN
        v_type_free := (v_free ->> c.job_type)::integer;
      ELSE
        SELECT count(*) INTO v_running FROM jobs
        WHERE status = 'running' AND lease_expires_at > p_now AND job_type = c.job_type;
        v_type_free := c.max_running - v_running;
      END IF;
      v_room := LEAST(v_room, v_type_free);
    END IF;
    CONTINUE WHEN v_room <= 0;
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
    v_taken := v_taken + v_rows;
    IF c.max_running IS NOT NULL THEN
      v_free := v_free || jsonb_build_object(c.job_type, v_type_free - v_rows);
    END IF;
  END LOOP;
END;
$$;
