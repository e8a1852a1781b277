import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseNamedParams } from '../../shared/db/named-params.js';
import { createJobTypeRegistry } from '../../shared/job-types/index.js';
import * as sql from '../../shared/jobs/sql.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * The console's pages must cost the same over a long history as over a short one: each statement a page
 * runs reads its page's rows (and what its filter skips), never the history. Here 30,000 jobs finished
 * two days ago sit under a small live queue, and each statement's EXPLAIN ANALYZE must read a few hundred
 * rows of `jobs` at most.
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

function rowsRead(plan: PlanNode, table: string): number {
  return nodes(plan)
    .filter(
      (n) =>
        n['Node Type'].includes('Scan') &&
        (n['Relation Name'] === table || n['Index Name']?.startsWith(`${table}_`)),
    )
    .reduce(
      (sum, n) =>
        sum +
        ((n['Actual Rows'] ?? 0) +
          (n['Rows Removed by Filter'] ?? 0) +
          (n['Rows Removed by Index Recheck'] ?? 0)) *
          (n['Actual Loops'] ?? 1),
      0,
    );
}

let t: TestDatabase;
let session: pg.Client;
const HISTORY = 30_000;
/** A job of the history with two attempts: a record row and its completed job row. */
let historicJob: string;

async function explain(text: string, params: Record<string, unknown>): Promise<PlanNode> {
  const { positional, names } = parseNamedParams(text);
  const values = names.map((n) => {
    if (!(n in params)) throw new Error(`no value for :${n}`);
    const v = params[n];
    return v !== null && typeof v === 'object' && !(v instanceof Date) ? JSON.stringify(v) : v;
  });
  await session.query('BEGIN');
  try {
    const res = await session.query({ text: `EXPLAIN (ANALYZE, FORMAT JSON) ${positional}`, values });
    return (res.rows[0]['QUERY PLAN'] as { Plan: PlanNode }[])[0]!.Plan;
  } finally {
    await session.query('ROLLBACK');
  }
}

const noFilter: sql.JobFilterShape = { status: null, jobType: false, key: false, from: false, to: false };

beforeAll(async () => {
  t = await createTestDatabase();
  session = new pg.Client({ connectionString: t.url });
  await session.connect();
  // History: finished two days ago, created before the live jobs (older ids). A completed job's row is its
  // last attempt's record (its duration set, migration 0026); one job in ten failed a first attempt.
  await session.query(`
    INSERT INTO jobs (id, job_type, status, attempts, payload, scheduled_at, started_at, completed_at, last_error,
                      claimed_at, duration_ms)
    SELECT lana_uuid_v7_floor(now() - interval '3 days' + g * interval '1 second'),
           (ARRAY['sync', 'notification', 'interest-accrual'])[1 + g % 3],
           CASE WHEN g % 50 = 0 THEN 'cancelled' ELSE 'completed' END, 1 + (g % 10 = 0)::int, '{}',
           now() - interval '2 days', now() - interval '2 days', now() - interval '2 days', NULL,
           now() - interval '2 days', CASE WHEN g % 50 <> 0 THEN 5 END
    FROM generate_series(1, ${HISTORY}) g`);
  await session.query(`
    INSERT INTO job_execution_records (job_id, attempt, claimed_at, started_at, finished_at, outcome, error,
                                       duration_ms)
    SELECT id, 1, completed_at, completed_at, completed_at, 'failed', 'first', 5 FROM jobs WHERE attempts = 2`);
  historicJob = (
    await session.query<{ id: string }>('SELECT job_id::text AS id FROM job_execution_records LIMIT 1')
  ).rows[0]!.id;
  const tracker = new JobTracker({ db: t.db, registry: createJobTypeRegistry() });
  for (let i = 0; i < 30; i++) {
    await tracker.enqueueUntyped([{ type: 'sync', payload: {}, idempotencyKey: `live-${i}` }]);
  }
  await tracker.enqueueUntyped([{ type: 'maintenance', payload: {} }]);
  await session.query(
    `UPDATE jobs SET status = 'failed', completed_at = now(), last_error = 'boom ' || (attempts % 2) WHERE idempotency_key IN ('live-1', 'live-2', 'live-3')`,
  );
  await session.query(
    `UPDATE jobs SET status = 'running', attempts = 1, lease_expires_at = now() + interval '1 minute' WHERE idempotency_key IN ('live-4', 'live-5')`,
  );
  await session.query('ANALYZE jobs');
  // As autovacuum leaves it: the BRIN index summarised.
  await session.query('VACUUM ANALYZE job_execution_records');
}, 120_000);

afterAll(async () => {
  await session?.end();
  await t?.drop();
});

describe('each console page reads its rows, not the history', () => {
  const cases: [string, () => [string, Record<string, unknown>]][] = [
    ['jobs list, first page', () => [sql.jobsPageSql(noFilter, false), { limit: 51 }]],
    ['jobs list, pending', () => [sql.jobsPageSql({ ...noFilter, status: 'pending' }, false), { limit: 51 }]],
    [
      'jobs list, cancelled',
      () => [sql.jobsPageSql({ ...noFilter, status: 'cancelled' }, false), { limit: 51 }],
    ],
    [
      'jobs list, completed',
      () => [sql.jobsPageSql({ ...noFilter, status: 'completed' }, false), { limit: 51 }],
    ],
    [
      'jobs list, filtered by status',
      () => [sql.jobsPageSql({ ...noFilter, status: 'failed' }, false), { limit: 51 }],
    ],
    [
      'jobs list, filtered by type',
      () => [sql.jobsPageSql({ ...noFilter, jobType: true }, false), { job_type: 'maintenance', limit: 51 }],
    ],
    [
      'jobs list, filtered by type, a type with history',
      () => [sql.jobsPageSql({ ...noFilter, jobType: true }, false), { job_type: 'sync', limit: 51 }],
    ],
    [
      'jobs list, filtered by type, a later page',
      () => [
        sql.jobsPageSql({ ...noFilter, jobType: true }, true),
        { job_type: 'maintenance', before: 'ffffffff-ffff-7fff-bfff-ffffffffffff', limit: 51 },
      ],
    ],
    [
      'jobs list, filtered by type and running',
      () => [
        sql.jobsPageSql({ ...noFilter, status: 'running', jobType: true }, false),
        { job_type: 'sync', limit: 51 },
      ],
    ],
    [
      'jobs list, filtered by key',
      () => [sql.jobsPageSql({ ...noFilter, key: true }, false), { idempotency_key: 'live-7', limit: 51 }],
    ],
    [
      'jobs list, a time range',
      () => [
        sql.jobsPageSql({ ...noFilter, from: true, to: true }, false),
        {
          created_from: new Date(Date.now() - 3_600_000),
          created_to: new Date(Date.now() + 60_000),
          limit: 51,
        },
      ],
    ],
    [
      'jobs list, a later page',
      () => [
        sql.jobsPageSql({ ...noFilter, status: 'pending', jobType: true }, true),
        { job_type: 'sync', before: 'ffffffff-ffff-7fff-bfff-ffffffffffff', limit: 51 },
      ],
    ],
    [
      'bulk count',
      () => [sql.countForBulkSql({ ...noFilter, status: 'failed' }, 'retryable'), { cap: 10_000 }],
    ],
    [
      'overview counts',
      () => [sql.countsByStatusAndTypeBoundedSql, { now: null, finished_window_seconds: 86_400 }],
    ],
    ['overview queue state', () => [sql.queueStateSql, { now: null }]],
    ['overview running past lease', () => [sql.overdueRunningSql, { now: null }]],
    ['failures', () => [sql.failureGroupsSql, { limit: 100 }]],
    // The history view (migration 0026): its records and the completed job rows, each on its own index.
    [
      'stats: outcomes over the last hour',
      () => [sql.recentOutcomesSql, { now: null, window_seconds: 3600 }],
    ],
    ['a job’s history', () => [sql.executionsByJobSql, { id: historicJob }]],
  ];
  test.each(cases)('%s', async (_name, make) => {
    const [text, params] = make();
    const plan = await explain(text, params);
    const read = rowsRead(plan, 'jobs') + rowsRead(plan, 'job_execution_records');
    expect(
      read,
      JSON.stringify(nodes(plan).map((n) => `${n['Node Type']} ${n['Index Name'] ?? ''}`)),
    ).toBeLessThan(200);
  });

  test('a job’s history reads both of its attempts', async () => {
    const { positional, names } = parseNamedParams(sql.executionsByJobSql);
    const res = await session.query({ text: positional, values: names.map(() => historicJob) });
    expect(res.rows.map((r) => [r.attempt, r.outcome])).toEqual([
      [1, 'failed'],
      [2, 'completed'],
    ]);
  });
});
