import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { parseNamedParams } from '../../shared/db/named-params.js';
import { PgDatabase } from '../../shared/db/pg-driver.js';
import * as sql from '../../shared/jobs/sql.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { createCoreRegistry, waitFor } from '../support/lifecycle.js';

/**
 * The worker runs its statements as prepared statements, and PostgreSQL soon settles each on a generic plan
 * that it keeps for the session until the table's statistics change. So a plan chosen while the queue was
 * nearly empty is the plan that runs when an outage or a month-end batch leaves 30,000 jobs waiting: if it
 * found its rows by reading a partial index (ready or running jobs) whole, because that index was tiny
 * then, every claim and every completion would now read all of it.
 *
 * Here each hot statement gets its generic plan on a table with a history but an empty queue, then the
 * queue grows (with no ANALYZE in between) and the cached plan runs: it must read about as many index
 * entries and rows as the statement's own work, not the queue. (A plan made on a nearly empty *table*
 * reads the table whole instead, until autovacuum's first ANALYZE of it; the README says more.)
 */
interface PlanNode {
  'Node Type': string;
  'Actual Rows'?: number;
  'Actual Loops'?: number;
  'Rows Removed by Filter'?: number;
  'Rows Removed by Index Recheck'?: number;
  'Relation Name'?: string;
  'Index Name'?: string;
  Plans?: PlanNode[];
}

const nodes = (plan: PlanNode): PlanNode[] => [plan, ...(plan.Plans ?? []).flatMap(nodes)];

/** Rows and index entries the scans of `jobs` (and its indexes) read, kept or filtered out. */
function jobsRowsRead(plan: PlanNode): { read: number; scans: string[] } {
  const scans = nodes(plan).filter(
    (n) =>
      n['Node Type'].includes('Scan') &&
      (n['Relation Name'] === 'jobs' || n['Index Name']?.startsWith('jobs_')),
  );
  const read = scans.reduce(
    (sum, n) =>
      sum +
      ((n['Actual Rows'] ?? 0) +
        (n['Rows Removed by Filter'] ?? 0) +
        (n['Rows Removed by Index Recheck'] ?? 0)) *
        (n['Actual Loops'] ?? 1),
    0,
  );
  return { read, scans: scans.map((n) => `${n['Node Type']} ${n['Index Name'] ?? ''}`.trim()) };
}

let t: TestDatabase;
let session: pg.Client;
const prepared = new Map<string, unknown[]>();
let running: { id: string; attempts: number };

const jobsInsert = (n: number, status: string, scheduledAt: string, priority = 0) =>
  `INSERT INTO jobs (job_type, status, attempts, priority, scheduled_at, started_at, completed_at, lease_expires_at)
   SELECT 'noop', '${status}', ${status === 'pending' ? 0 : 1}, ${priority} + g % 2, ${scheduledAt},
          ${status === 'pending' ? 'NULL' : "now() - interval '1 minute'"},
          ${status === 'completed' ? "now() - interval '1 minute'" : 'NULL'},
          ${status === 'pending' ? 'NULL' : "now() + interval '1 hour'"}
   FROM generate_series(1, ${n}) g`;

/** Prepares `sql` in the session under `name` and runs it once (rolled back), so its generic plan is cached. */
async function cachePlan(name: string, text: string, params: Record<string, unknown>): Promise<void> {
  const { positional, names } = parseNamedParams(text);
  const values = names.map((n) => {
    if (!(n in params)) throw new Error(`${name}: no value for :${n}`);
    return params[n];
  });
  prepared.set(name, values);
  await session.query('BEGIN');
  try {
    await session.query({ name, text: positional, values });
  } finally {
    await session.query('ROLLBACK');
  }
}

/** EXPLAIN ANALYZE of the cached plan, rolled back. */
async function runCached(name: string): Promise<PlanNode> {
  const values = prepared.get(name)!;
  const literal = (v: unknown) => (v === null ? 'NULL' : pg.escapeLiteral(String(v)));
  const args = values.length ? `(${values.map(literal).join(', ')})` : '';
  await session.query('BEGIN');
  try {
    const res = await session.query(`EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE ${name}${args}`);
    return res.rows[0]['QUERY PLAN'][0].Plan as PlanNode;
  } finally {
    await session.query('ROLLBACK');
  }
}

beforeAll(async () => {
  t = await createTestDatabase();
  // Statistics change only where this test says (autovacuum would re-plan, and hide what it checks).
  await t.db.query('ALTER TABLE jobs SET (autovacuum_enabled = false)');
  // A system that has run for a while (20,000 finished jobs), its queue empty but for a few jobs.
  await t.db.query(jobsInsert(20_000, 'completed', "now() - interval '1 hour'"));
  await t.db.query(jobsInsert(4, 'pending', "now() - interval '1 second'"));
  await t.db.query(jobsInsert(4, 'running', "now() - interval '1 minute'"));
  await t.db.query('VACUUM ANALYZE jobs');
  running = (
    await t.db.query<{ id: string; attempts: number }>(
      "SELECT id, attempts FROM jobs WHERE status = 'running' ORDER BY id LIMIT 1",
    )
  ).rows[0]!;

  session = new pg.Client({ connectionString: t.url });
  await session.connect();
  await session.query('SET plan_cache_mode = force_generic_plan');
  const now = null;
  const one = (extra: Record<string, unknown> = {}) =>
    JSON.stringify([{ id: running.id, attempt: running.attempts, ...extra }]);
  await cachePlan('claim_full', sql.claimDueJobsForWorkerSql, {
    now,
    limit: 10,
    start_now: true,
    dispatch_lease_seconds: 90,
    claim_token: null,
  });
  await cachePlan('claim_short', sql.claimDueJobsForWorkerSql, {
    now,
    limit: 500,
    start_now: true,
    dispatch_lease_seconds: 90,
    claim_token: null,
  });
  await cachePlan('claim_rows', sql.claimDueJobsSql, {
    now,
    limit: 10,
    start_now: false,
    dispatch_lease_seconds: 90,
    claim_token: '00000000-0000-4000-8000-000000000002',
  });
  await cachePlan('start', sql.startAttemptSql, {
    now,
    id: running.id,
    attempt: running.attempts,
    token: '00000000-0000-4000-8000-000000000001',
    rates: null,
    start_lead_ms: 200,
    rate_ahead_seconds: 1,
  });
  const token = '00000000-0000-4000-8000-000000000003';
  await cachePlan('complete', sql.completeAttemptsSql, { now, items: one({ duration_ms: 1 }), token });
  await cachePlan('fail', sql.failAttemptsFromInputSql, { now, items: one({ error: 'boom' }), token });
  await cachePlan('release', sql.releaseClaimsSql, { now, items: one(), require_unstarted: false });
  await cachePlan('rescue', sql.rescueExpiredLeasesSql, { now, limit: 100, token: null, max_handbacks: 10 });
  await cachePlan('queue_state', sql.queueStateSql, { now });
  await cachePlan('next_due', sql.nextDueAtSql, { now });
  await cachePlan('overdue', sql.overdueRunningSql, { now });
  await cachePlan('by_key', sql.jobsByIdempotencyKeySql, {
    keys: JSON.stringify([{ job_type: 'noop', idempotency_key: 'order-1' }]),
  });
  await cachePlan('cancel', sql.cancelJobSql, { now, id: running.id, reason: null });
  await cachePlan('retry', sql.retryJobSql, { now, id: running.id, budget: 1 });

  // Then the queue fills: 100 jobs due now, 30,000 scheduled ahead (an outage's retries, tomorrow's
  // reminders), 3,000 running, and more history. No ANALYZE: the cached plans stay.
  await t.db.query(jobsInsert(96, 'pending', "now() - interval '1 second'"));
  await t.db.query(jobsInsert(30_000, 'retrying', "now() + interval '1 hour'"));
  await t.db.query(jobsInsert(3_000, 'running', "now() - interval '1 minute'"));
  await t.db.query(jobsInsert(20_000, 'completed', "now() - interval '1 hour'"));
});

afterAll(async () => {
  await session?.end();
  await t?.drop();
});

describe('plans cached while the queue was empty, run when it is full', () => {
  test.each([
    // [statement, what it does, bound on rows and index entries it may read]
    // A claim reads each job twice (the locking read, the update by address) and walks the priorities.
    ['claim_full', 'claims 10 of the 100 due jobs', 2 * 10 + 10],
    ['claim_short', 'claims all 100 due jobs and finds the next one scheduled ahead', 2 * 100 + 10],
    ['claim_rows', 'claims 10 jobs as rows', 2 * 10 + 10],
    ['start', 'marks one attempt begun', 5],
    ['complete', 'completes one attempt', 5],
    ['fail', 'fails one attempt', 5],
    ['release', 'releases one claim', 5],
    ['rescue', 'finds no expired lease', 5],
    ['queue_state', 'counts the 100 due jobs', 100 + 10],
    ['next_due', 'finds the earliest ready job', 10],
    ['overdue', 'counts no overdue job', 5],
    ['by_key', 'looks up one idempotency key', 5],
    ['cancel', 'cancels one job', 5],
    ['retry', 'retries one job (not failed: no change)', 5],
  ] as const)('%s (%s) reads at most %i rows and index entries of jobs', async (name, _what, bound) => {
    const plan = await runCached(name);
    const { read, scans } = jobsRowsRead(plan);
    expect(scans.length, `${name} reads jobs`).toBeGreaterThan(0);
    expect(read, `${name}: ${scans.join(', ')}`).toBeLessThanOrEqual(bound);
  });

  test('the short claim takes every due job and answers when the first job scheduled ahead is due', async () => {
    const { positional, names } = parseNamedParams(sql.claimDueJobsForWorkerSql);
    const values = names.map(
      (n) =>
        ({ now: null, limit: 500, start_now: true, dispatch_lease_seconds: 90, claim_token: null })[
          n as 'now'
        ],
    );
    await session.query('BEGIN');
    try {
      const res = await session.query({ name: 'claim_short', text: positional, values });
      const claimed = JSON.parse(res.rows[0].jobs) as unknown[];
      expect(claimed).toHaveLength(100);
      const ahead = await session.query(
        "SELECT min(scheduled_at) AS at FROM jobs WHERE status IN ('pending', 'retrying') AND scheduled_at > now()",
      );
      expect(res.rows[0].next_due_at).toEqual(ahead.rows[0].at);
    } finally {
      await session.query('ROLLBACK');
    }
  });
});

describe('pooled connections are replaced after their lifetime, and their plans made again', () => {
  test('an idle connection past its lifetime is closed; the next query gets a new session', async () => {
    const db = new PgDatabase({ connectionString: t.url, max: 1, maxConnectionLifetimeSeconds: 1 });
    const backend = async () =>
      (await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    try {
      const first = await backend();
      expect(await backend()).toBe(first);
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const second = await backend();
      expect(second).not.toBe(first);
      // The old session ends (its backend exits a moment after the client says goodbye).
      const alive = async () =>
        (
          await db.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = :pid', {
            pid: first,
          })
        ).rows[0]!.n;
      for (let i = 0; i < 50 && (await alive()) > 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect(await alive()).toBe(0);
    } finally {
      await db.close();
    }
  });
});

describe('idle pooled connections', () => {
  test('the pool keeps minConnections (default 2) open past the 10 s idle timeout, and closes the rest', async () => {
    const byDefault = new PgDatabase({ connectionString: t.url });
    const none = new PgDatabase({ connectionString: t.url, minConnections: 0 });
    try {
      // Four statements at once: four sessions each.
      const four = (db: PgDatabase) => Promise.all([1, 2, 3, 4].map(() => db.query('SELECT pg_sleep(0.05)')));
      await Promise.all([four(byDefault), four(none)]);
      expect([byDefault.pool.totalCount, none.pool.totalCount]).toEqual([4, 4]);
      await new Promise((resolve) => setTimeout(resolve, 10_500));
      expect([byDefault.pool.totalCount, none.pool.totalCount]).toEqual([2, 0]);
      for (const bad of [-1, 1.5, Number.NaN])
        expect(() => new PgDatabase({ connectionString: t.url, minConnections: bad })).toThrow(
          /minConnections must be a whole number/,
        );
    } finally {
      await byDefault.close();
      await none.close();
    }
  });

  test('a session that reaches its lifetime is replaced at once, and each new session is warmed first', async () => {
    const app = 'lana-lifetime-test';
    const db = new PgDatabase({
      connectionString: t.url,
      applicationName: app,
      maxConnectionLifetimeSeconds: 1,
      minConnections: 2,
    });
    // A session setting, visible to later statements of the same session only.
    db.warmSessionsWith(`SELECT set_config('lana.warmed', 'yes', false)`);
    const sessions = async () =>
      (
        await t.db.query<{ pid: number }>(
          'SELECT pid FROM pg_stat_activity WHERE application_name = :app ORDER BY pid',
          { app },
        )
      ).rows.map((r) => r.pid);
    try {
      const both = () =>
        Promise.all(
          [1, 2].map(() =>
            db.query<{ pid: number; warmed: string | null }>(
              `SELECT pg_backend_pid() AS pid, current_setting('lana.warmed', true) AS warmed
               FROM pg_sleep(0.05)`,
            ),
          ),
        );
      const first = (await both()).map((r) => r.rows[0]!);
      expect(first.map((r) => r.warmed)).toEqual(['yes', 'yes']);
      const firstPids = first.map((r) => r.pid).sort((a, b) => a - b);
      expect(await sessions()).toEqual(firstPids);
      // Past the lifetime, with no statement asking for one, two new sessions are open (and warmed: the
      // pool counts a session idle once its warm-up is done).
      await waitFor(
        async () => {
          const now = await sessions();
          const renewed = now.length === 2 && now.every((pid) => !firstPids.includes(pid));
          return renewed && db.pool.idleCount === 2;
        },
        { what: 'both sessions replaced', timeoutMs: 5_000 },
      );
      const replaced = await sessions();
      // Their warm-up ran before anything else used them.
      const second = (await both()).map((r) => r.rows[0]!);
      expect(second.map((r) => r.pid).sort((a, b) => a - b)).toEqual(replaced);
      expect(second.map((r) => r.warmed)).toEqual(['yes', 'yes']);
    } finally {
      await db.close();
    }
    // Once the pool is closed, none is reopened.
    await waitFor(async () => (await sessions()).length === 0, { what: 'the sessions to close' });
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    expect(await sessions()).toEqual([]);
  });

  test('a warm-up statement that fails leaves the session usable', async () => {
    const db = new PgDatabase({ connectionString: t.url });
    try {
      db.warmSessionsWith('SELECT * FROM no_such_table');
      expect((await db.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await db.close();
    }
  });

  test('a job tracker has its database warm each new session for the first job insert', () => {
    const db = new PgDatabase({ connectionString: t.url });
    const warm = vi.spyOn(db, 'warmSessionsWith');
    new JobTracker({ db, registry: createCoreRegistry() });
    expect(warm).toHaveBeenCalledWith(sql.warmUpInsertSql);
    return db.close();
  });
});
