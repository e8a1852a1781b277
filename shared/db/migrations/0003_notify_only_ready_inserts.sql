-- A job inserted already claimed (a local worker's eager start, see `Worker`) is running in the worker
-- that inserted it: waking every idle worker for it would only cost each of them an empty claim.
CREATE OR REPLACE FUNCTION lana_jobs_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM inserted
             WHERE status IN ('pending', 'retrying') AND scheduled_at <= now() + interval '1 minute') THEN
    PERFORM pg_notify('lana_jobs', '');
  END IF;
  RETURN NULL;
END;
$$;
