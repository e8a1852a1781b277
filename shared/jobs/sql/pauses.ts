/**
 * Paused job types (`job_type_pauses`, migration 0015): every claim leaves a paused type's due jobs where
 * they are (see `claim.ts`); these statements pause, resume and list.
 */

/**
 * Pauses :job_type, recorded with who (:paused_by), when and why (:reason). Pausing a paused type changes
 * nothing and answers the pause in force (`created` false), so the first operator's reason is kept.
 */
export const pauseJobTypeSql = `
WITH made AS (
  INSERT INTO job_type_pauses (job_type, paused_by, paused_at, reason)
  VALUES (CAST(:job_type AS text), CAST(:paused_by AS text), COALESCE(CAST(:now AS timestamptz), now()),
          CAST(:reason AS text))
  ON CONFLICT (job_type) DO NOTHING
  RETURNING job_type, paused_by, paused_at, reason
)
SELECT job_type, paused_by, paused_at, reason, true AS created FROM made
UNION ALL
SELECT job_type, paused_by, paused_at, reason, false AS created FROM job_type_pauses
WHERE job_type = CAST(:job_type AS text) AND NOT EXISTS (SELECT 1 FROM made)`;

/**
 * Resumes :job_type: answers the pause it ended (no row: it was not paused) and wakes the local workers
 * (NOTIFY 'lana_jobs') when it ended one, so the type's due jobs are claimed at once.
 */
export const resumeJobTypeSql = `
WITH ended AS (
  DELETE FROM job_type_pauses WHERE job_type = CAST(:job_type AS text)
  RETURNING job_type, paused_by, paused_at, reason
), woken AS (
  SELECT pg_notify('lana_jobs', '') FROM (SELECT 1 FROM ended) AS any_ended
)
SELECT job_type, paused_by, paused_at, reason, (SELECT count(*) FROM woken) AS woken FROM ended`;

/** Every paused type, by name. */
export const pausedJobTypesSql = `
SELECT job_type, paused_by, paused_at, reason FROM job_type_pauses ORDER BY job_type`;
