-- A worker no longer wakes itself for the slots it gives up.
--
-- Slots a worker gives up wake the workers (NOTIFY), so that one waiting for them claims at once. The
-- notification reached the worker that gave them up too, which then claimed again for nothing: on a
-- limited type with a job now and then, three claims per job instead of one. The notification now names
-- the worker (`slots-given-up-by:<worker id>`); a worker ignores its own. Anything listening for any
-- notification on `lana_jobs` (the previous release) wakes as before. Otherwise as in 0013.

CREATE OR REPLACE FUNCTION lana_jobs_settle_worker_slots(
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
    -- Names the worker: it knows what it gave up and need not wake for it (see the header).
    PERFORM pg_notify('lana_jobs', 'slots-given-up-by:' || p_worker::text);
  END IF;
END;
$$;
