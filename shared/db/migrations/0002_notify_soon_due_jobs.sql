-- Wake idle local workers also for jobs due within the next minute, not only for jobs already due. A woken
-- worker finds nothing due yet, asks when the next job is due and sleeps exactly until then, so a job
-- enqueued to run in a few seconds starts on time instead of at the worker's next poll.
CREATE OR REPLACE FUNCTION lana_jobs_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM inserted WHERE scheduled_at <= now() + interval '1 minute') THEN
    PERFORM pg_notify('lana_jobs', '');
  END IF;
  RETURN NULL;
END;
$$;
