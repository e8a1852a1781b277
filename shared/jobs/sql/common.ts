/**
 * The pieces several statements share, each named for what it is. `:now` is the injectable clock: NULL
 * means the database's own `now()`.
 */

export const NOW = 'COALESCE(CAST(:now AS timestamptz), now())';

/**
 * When the current attempt was claimed. Rows claimed before migration 0007 have no `claimed_at`: their
 * lease ran lease_seconds from the claim.
 */
export const CLAIMED_AT =
  'COALESCE(j.claimed_at, j.lease_expires_at - make_interval(secs => j.lease_seconds))';

/**
 * The earliest ready job of each priority, lowest priority first, as a CTE named `name`: one index descent
 * per distinct priority (a loose scan of `jobs_ready_idx`), so it costs the same with a million jobs
 * scheduled ahead as with none; `min(scheduled_at)` over the ready rows would read all of them, the index
 * leading with priority.
 */
export function earliestPerPrioritySql(name: string): string {
  const ready = `status IN ('pending', 'retrying')`;
  return `${name} AS (
  (SELECT priority, scheduled_at FROM jobs WHERE ${ready} ORDER BY priority, scheduled_at LIMIT 1)
  UNION ALL
  SELECT n.priority, n.scheduled_at FROM ${name} e CROSS JOIN LATERAL (
    SELECT priority, scheduled_at FROM jobs WHERE ${ready} AND priority > e.priority
    ORDER BY priority, scheduled_at LIMIT 1) n
)`;
}

/** The priorities that have ready jobs, each with its earliest job (see `earliestPerPrioritySql`). */
export const readyPriorities = earliestPerPrioritySql('ready_priorities');

/**
 * The execution row that closes an attempt, written once. `ended` must yield (id, attempts, claimed_at,
 * run_started_at, outcome, error, duration_ms); the duration falls back to the time since the start.
 */
export function closeAttemptsSql(ended: string): string {
  return `
  INSERT INTO job_executions (job_id, attempt, claimed_at, started_at, finished_at, outcome, error, duration_ms)
  SELECT e.id, e.attempts, e.claimed_at, e.run_started_at, ${NOW}, e.outcome, e.error,
         COALESCE(e.duration_ms, (extract(epoch FROM ${NOW} - COALESCE(e.run_started_at, e.claimed_at)) * 1000)::integer)
  FROM ${ended} e`;
}

/**
 * The rows of a batch statement, looked up by primary key: `j.id = ANY(ARRAY(SELECT id FROM items))`
 * beside the join on `items`. The planner counts a JSON record set as 100 rows whatever it holds, and for
 * 100 it would rather read a table of up to some 25,000 jobs whole and hash-join it; it counts the array at
 * 10, for which the primary key wins on any table worth the name (`test/jobs/cached-plans.test.ts`).
 */
export const idIn = (items: string) => `j.id = ANY(ARRAY(SELECT id FROM ${items}))`;
