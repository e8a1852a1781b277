/**
 * Statements of the release before migration 0026, verbatim: its code keeps running against the new schema
 * during a deploy (shared/db/migrations/README.md), so the tests run them against it. That release wrote
 * every ended attempt, completions included, into `job_executions` (now a view over
 * `job_execution_records` and the completed job rows), and pruned through it.
 */

/** The completion of attempts (`completeAttemptsSql`): inserts the completed attempt's record. */
export const previousCompleteAttemptsSql = `
WITH items AS (
  SELECT * FROM json_to_recordset(CAST(:items AS json)) AS x(id uuid, attempt integer, duration_ms integer)
), done AS (
  UPDATE jobs j
  SET status = 'completed', completed_at = COALESCE(CAST(:now AS timestamptz), now()),
      updated_at = COALESCE(CAST(:now AS timestamptz), now()), finish_token = CAST(:token AS uuid)
  FROM items x
  WHERE j.id = ANY(ARRAY(SELECT id FROM items))
    AND j.id = x.id AND j.attempts = x.attempt AND j.status = 'running'
  -- The lease is left as it was (only enforced while running), so the claim time stays derivable here.
  RETURNING j.id, j.job_type, j.attempts,
            COALESCE(j.claimed_at, j.lease_expires_at - make_interval(secs => j.lease_seconds)) AS claimed_at,
            j.started_at AS run_started_at, x.duration_ms, 'completed'::text AS outcome, NULL::text AS error
), closed AS (
  INSERT INTO job_executions (job_id, attempt, claimed_at, started_at, finished_at, outcome, error,
                              duration_ms)
  SELECT e.id, e.attempts, e.claimed_at, e.run_started_at, COALESCE(CAST(:now AS timestamptz), now()),
         e.outcome, e.error,
         COALESCE(e.duration_ms,
                  (extract(epoch FROM COALESCE(CAST(:now AS timestamptz), now())
                                      - COALESCE(e.run_started_at, e.claimed_at)) * 1000)::integer)
  FROM done e
), resent AS (
  SELECT j.id, j.job_type, x.duration_ms FROM jobs j JOIN items x ON j.id = x.id
  WHERE j.id = ANY(ARRAY(SELECT id FROM items)) AND j.attempts = x.attempt AND j.status = 'completed'
    AND j.finish_token = CAST(:token AS uuid)
)
SELECT COALESCE(json_agg(json_build_array(id, job_type, duration_ms)), '[]')::text AS applied
FROM (SELECT id, job_type, duration_ms FROM done UNION ALL SELECT id, job_type, duration_ms FROM resent) a`;

/** Retention (`pruneFinishedJobsSql`): deletes the pruned jobs' records through `job_executions`. */
export const previousPruneFinishedJobsSql = `
WITH doomed AS (
  SELECT id FROM jobs
  WHERE status IN (SELECT jsonb_array_elements_text(CAST(:statuses AS jsonb)))
    AND completed_at < CAST(:before AS timestamptz)
    AND (CAST(:job_type AS text) IS NULL OR job_type = CAST(:job_type AS text))
  LIMIT :batch
  FOR UPDATE SKIP LOCKED
), executions AS (
  DELETE FROM job_executions e USING doomed d WHERE e.job_id = d.id
), payload_changes AS (
  DELETE FROM job_payload_changes c USING doomed d WHERE c.job_id = d.id
)
DELETE FROM jobs j USING doomed d WHERE j.id = d.id
RETURNING j.id`;
