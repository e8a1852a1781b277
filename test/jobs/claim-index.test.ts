import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Queryable } from '../../shared/db/port.js';
import {
  claimDueJobsForWorkerSql,
  claimDueJobsSql,
  claimWithinHoldsSql,
  listJobsSql,
  nextDueAtSql,
  queueStateSql,
} from '../../shared/jobs/sql.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * The claim must read the first rows of `jobs_ready_idx` in order (its partial predicate is the claim's
 * status filter, its columns the claim's ORDER BY) and never sort the queue. Checked with EXPLAIN on a
 * realistic table: a large history of finished jobs plus thousands of ready ones, after ANALYZE, with the
 * planner's defaults (no `enable_seqscan = off`: the index wins on its own).
 */
interface PlanNode {
  'Node Type': string;
  'Actual Rows'?: number;
  'Actual Loops'?: number;
  'Rows Removed by Filter'?: number;
  'Index Cond'?: string;
  'Scan Direction'?: string;
  'Index Name'?: string;
  'Relation Name'?: string;
  'Subplan Name'?: string;
  'CTE Name'?: string;
  'Sort Key'?: string[];
  Plans?: PlanNode[];
}

function nodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)];
}

/**
 * A sequential scan of anything but the paused types (`job_type_pauses`, a row per paused type, read once
 * per claim to learn whether any type is paused).
 */
function seqScanBeyondPauses(n: PlanNode): boolean {
  return n['Node Type'] === 'Seq Scan' && n['Relation Name'] !== 'job_type_pauses';
}

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
  // 30,000 finished jobs (history) and 6,000 ready ones, due at different times and priorities.
  await t.db.query(
    `INSERT INTO jobs (job_type, status, attempts, scheduled_at, started_at, completed_at, lease_expires_at)
     SELECT 'noop', CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'completed' END, 1,
            now() - interval '2 days', now() - interval '2 days', now() - interval '1 day', now() - interval '1 day'
     FROM generate_series(1, 30000) g`,
  );
  await t.db.query(
    `INSERT INTO jobs (job_type, status, attempts, priority, scheduled_at)
     SELECT 'noop', CASE WHEN g % 4 = 0 THEN 'retrying' ELSE 'pending' END, CASE WHEN g % 4 = 0 THEN 1 ELSE 0 END,
            g % 3 - 1, now() - make_interval(secs => g) + CASE WHEN g % 5 = 0 THEN interval '1 hour' ELSE interval '0' END
     FROM generate_series(1, 6000) g`,
  );
  await t.db.query('ANALYZE jobs');
});
afterAll(async () => t.drop());

describe('the claim query and its index', () => {
  test('the real claim statement: a loose scan finds the priorities, each one’s due jobs are one Index Scan range, no Sort', async () => {
    const res = await t.db.query<{ 'QUERY PLAN': { Plan: PlanNode }[] }>(
      `EXPLAIN (FORMAT JSON) ${claimDueJobsSql}`,
      {
        now: null,
        limit: 50,
        start_now: true,
        dispatch_lease_seconds: 90,
        claim_token: null,
      },
    );
    const root = res.rows[0]!['QUERY PLAN'][0]!.Plan;
    const all = nodes(root);
    const jobsScans = (plan: PlanNode) =>
      nodes(plan)
        .filter((n) => n['Node Type'].includes('Scan') && n['Relation Name'] === 'jobs')
        .map((n) => [n['Node Type'].replace('Index Only Scan', 'Index Scan'), n['Index Name']]);
    // The priorities that have ready jobs: read from jobs_ready_idx, one descent each (counted in the next test).
    const priorities = jobsScans(all.find((n) => n['Subplan Name'] === 'CTE ready_priorities')!);
    expect(priorities.length).toBeGreaterThan(0);
    for (const scan of priorities) expect(scan).toEqual(['Index Scan', 'jobs_ready_idx']);
    // The rows it picks and locks, priority by priority: LockRows over an Index Scan of jobs_ready_idx whose
    // condition is the range (this priority, due by now), so it stops at the first job scheduled ahead.
    const picker = all.find((n) => n['Node Type'] === 'Limit' && n['Subplan Name']?.startsWith('InitPlan'))!;
    const lock = nodes(picker).find((n) => n['Node Type'] === 'LockRows')!;
    const lockNodes = nodes(lock);
    expect(lockNodes.map((n) => n['Node Type'])).toEqual(['LockRows', 'Index Scan']);
    expect(lockNodes[1]).toMatchObject({ 'Index Name': 'jobs_ready_idx', 'Relation Name': 'jobs' });
    expect(lockNodes[1]!['Index Cond']).toMatch(/^\(\(priority = r\.priority\) AND \(scheduled_at <= /);
    // The update fetches the picked (locked) rows by their physical address; nothing scans the table.
    const update = all.find((n) => n['Node Type'] === 'ModifyTable')!;
    expect(jobsScans(update)).toEqual([
      ['Index Scan', 'jobs_ready_idx'],
      ['Tid Scan', undefined],
    ]);
    expect(all.some((n) => seqScanBeyondPauses(n) || n['Node Type'].startsWith('Bitmap'))).toBe(false);
    // The only Sort orders the (at most :limit) rows the claim returns, read from the CTEs (this claim's,
    // and a resent claim's earlier one), never the queue.
    for (const sort of all.filter((n) => n['Node Type'] === 'Sort')) {
      expect(sort).toBe(root);
      const input = sort.Plans!.find((n) => n['Subplan Name'] === undefined)!;
      const read = nodes(input).filter((n) => n['Node Type'] === 'CTE Scan');
      expect(read.map((n) => n['CTE Name']).sort()).toEqual(['around_pauses', 'claimed', 'prior']);
    }
    expect(nodes(picker).some((n) => n['Node Type'] === 'Sort')).toBe(false);
  });

  test('the claim’s WHERE and ORDER BY alone: Index Scan on jobs_ready_idx, no Sort node at all', async () => {
    const res = await t.db.query<{ 'QUERY PLAN': string }>(
      `EXPLAIN SELECT id FROM jobs
       WHERE status IN ('pending', 'retrying') AND scheduled_at <= now()
       ORDER BY priority, scheduled_at, id
       LIMIT 50 FOR UPDATE SKIP LOCKED`,
    );
    const text = res.rows.map((r) => r['QUERY PLAN']).join('\n');
    expect(text).toMatch(/Index Scan using jobs_ready_idx on jobs/);
    expect(text).not.toMatch(/Sort/);
    expect(text).not.toMatch(/Seq Scan|Bitmap/);
  });

  test('the next due time reads one index entry per priority, however many jobs wait ahead', async () => {
    // Index entries read (returned or filtered out) by scans of jobs_ready_idx.
    const entriesRead = (plan: PlanNode) =>
      nodes(plan)
        .filter((n) => n['Index Name'] === 'jobs_ready_idx')
        .reduce(
          (sum, n) =>
            sum + ((n['Actual Rows'] ?? 0) + (n['Rows Removed by Filter'] ?? 0)) * (n['Actual Loops'] ?? 1),
          0,
        );
    const readyMin = async (q: { query: typeof t.db.query }) =>
      (
        await q.query<{ at: Date }>(
          "SELECT min(scheduled_at) AS at FROM jobs WHERE status IN ('pending', 'retrying')",
        )
      ).rows[0]!.at;

    const plain = await t.db.query<{ 'QUERY PLAN': { Plan: PlanNode }[] }>(
      `EXPLAIN (ANALYZE, FORMAT JSON) ${nextDueAtSql}`,
      { now: null },
    );
    // 6,000 ready jobs in three priorities: three entries, and one descent that finds no fourth priority.
    const plainPlan = plain.rows[0]!['QUERY PLAN'][0]!.Plan;
    expect(nodes(plainPlan).some((n) => seqScanBeyondPauses(n))).toBe(false);
    expect(entriesRead(plainPlan)).toBeGreaterThanOrEqual(3);
    expect(entriesRead(plainPlan)).toBeLessThanOrEqual(4);
    expect(
      (await t.db.query<{ next_due_at: Date }>(nextDueAtSql, { now: null })).rows[0]!.next_due_at,
    ).toEqual(await readyMin(t.db));

    // The worker's short claim: it takes every due job and answers the earliest of those scheduled ahead.
    const dueNow = (
      await t.db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM jobs WHERE status IN ('pending', 'retrying') AND scheduled_at <= now()",
      )
    ).rows[0]!.n;
    expect(dueNow).toBeGreaterThan(1_000);
    expect(dueNow).toBeLessThan(6_000);
    // The queue depth (read on every fetch-ready run) counts the due jobs and passes over no other.
    const depth = await t.db.query<{ 'QUERY PLAN': { Plan: PlanNode }[] }>(
      `EXPLAIN (ANALYZE, FORMAT JSON) ${queueStateSql}`,
      { now: null },
    );
    const depthPlan = depth.rows[0]!['QUERY PLAN'][0]!.Plan;
    expect(nodes(depthPlan).some((n) => seqScanBeyondPauses(n))).toBe(false);
    const counted = nodes(depthPlan).filter((n) => n['Index Cond']?.includes('scheduled_at'));
    expect(counted.length).toBeGreaterThan(0);
    for (const n of counted)
      expect(n['Index Cond']).toMatch(/^\(\(priority = r\.priority\) AND \(scheduled_at <= /);
    expect((await t.db.query<{ depth: number }>(queueStateSql, { now: null })).rows[0]!.depth).toBe(dueNow);
    const check = t.db.transaction(async (tx) => {
      const res = await tx.query<{ 'QUERY PLAN': { Plan: PlanNode }[] }>(
        `EXPLAIN (ANALYZE, FORMAT JSON) ${claimDueJobsForWorkerSql}`,
        { now: null, limit: 6_000, start_now: true, dispatch_lease_seconds: 90, claim_token: null },
      );
      const all = nodes(res.rows[0]!['QUERY PLAN'][0]!.Plan);
      const update = all.find((n) => n['Node Type'] === 'ModifyTable')!;
      const claimed = update['Actual Rows']!;
      expect(claimed).toBe(dueNow);
      expect(all.some((n) => seqScanBeyondPauses(n))).toBe(false);
      const readIn = (cte: string) => entriesRead(all.find((n) => n['Subplan Name'] === `CTE ${cte}`)!);
      // The priorities: three, and a descent that finds no fourth.
      expect(readIn('ready_priorities')).toBeLessThanOrEqual(4);
      // The claim: each priority's due jobs and the first job it has scheduled ahead, nothing more.
      expect(entriesRead(update)).toBeLessThanOrEqual(claimed + 3);
      // The next due time: the first job scheduled ahead in each priority, one index entry each.
      const ahead = all.filter((n) => n['Index Cond']?.includes('scheduled_at >'));
      expect(ahead.length).toBeGreaterThan(0);
      for (const n of ahead)
        expect(n['Index Cond']).toMatch(/^\(\(priority = r(_\d+)?\.priority\) AND \(scheduled_at > /);
      expect(ahead.reduce((sum, n) => sum + entriesRead(n), 0)).toBeLessThanOrEqual(3);
      // All told: the claimed rows (located, then updated by address) and a few entries per priority.
      expect(entriesRead(res.rows[0]!['QUERY PLAN'][0]!.Plan)).toBeLessThanOrEqual(claimed + 12);
      throw new Error('roll back');
    });
    await expect(check).rejects.toThrow('roll back');
    const answer = t.db.transaction(async (tx) => {
      const res = await tx.query<{ next_due_at: Date }>(claimDueJobsForWorkerSql, {
        now: null,
        limit: 6_000,
        start_now: true,
        dispatch_lease_seconds: 90,
        claim_token: null,
      });
      expect(res.rows[0]!.next_due_at).toEqual(await readyMin(tx));
      throw new Error('roll back');
    });
    await expect(answer).rejects.toThrow('roll back');
  });

  test('jobs list reads newest first from an index, never sorting the history', async () => {
    const plan = async (status: string | null) =>
      nodes(
        (
          await t.db.query<{ 'QUERY PLAN': { Plan: PlanNode }[] }>(`EXPLAIN (FORMAT JSON) ${listJobsSql}`, {
            status,
            job_type: null,
            limit: 50,
          })
        ).rows[0]!['QUERY PLAN'][0]!.Plan,
      );
    for (const [status, index] of [
      [null, 'jobs_pkey'],
      ['failed', 'jobs_failed_idx'],
    ] as const) {
      const all = await plan(status);
      expect(all.some((n) => n['Node Type'] === 'Sort' || seqScanBeyondPauses(n))).toBe(false);
      expect(all.find((n) => n['Node Type'].startsWith('Index'))).toMatchObject({
        'Index Name': index,
        'Scan Direction': 'Backward',
      });
    }
    // The same order as sorting by creation time (ties, one statement's rows, by id).
    const listed = await t.db.query<{ id: string }>(listJobsSql, {
      status: 'failed',
      job_type: null,
      limit: 3_000,
    });
    const sorted = await t.db.query<{ id: string }>(
      "SELECT id FROM jobs WHERE status = 'failed' ORDER BY created_at DESC, id DESC LIMIT 3000",
    );
    expect(listed.rows).toHaveLength(3_000);
    expect(listed.rows.map((r) => r.id)).toEqual(sorted.rows.map((r) => r.id));
  });

  test('the index is exactly the claim’s shape: partial on the ready statuses, keyed by the ORDER BY', async () => {
    const res = await t.db.query<{ def: string }>(
      "SELECT pg_get_indexdef('jobs_ready_idx'::regclass) AS def",
    );
    expect(res.rows[0]!.def).toBe(
      "CREATE INDEX jobs_ready_idx ON public.jobs USING btree (priority, scheduled_at, id) WHERE (status = ANY (ARRAY['pending'::text, 'retrying'::text]))",
    );
  });

  test('on this table the claim hands out the best ready jobs, in order', async () => {
    // Inside a transaction that is rolled back, so the other tests see the table unchanged.
    const check = t.db.transaction(async (tx) => {
      const claimed = await tx.query<{ priority: number; scheduled_at: Date; id: string }>(claimDueJobsSql, {
        now: null,
        limit: 100,
        start_now: false,
        dispatch_lease_seconds: 90,
        claim_token: null,
      });
      expect(claimed.rows).toHaveLength(100);
      const expected = await tx.query<{ id: string }>(
        `SELECT id FROM jobs WHERE status = 'running' ORDER BY priority, scheduled_at, id`,
      );
      expect(claimed.rows.map((r) => r.id)).toEqual(expected.rows.map((r) => r.id));
      // Nothing left ready and due ranks before the last claimed job.
      const better = await tx.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM jobs
         WHERE status IN ('pending', 'retrying') AND scheduled_at <= now()
           AND (priority, scheduled_at, id) < (CAST(:p AS integer), CAST(:s AS timestamptz), CAST(:id AS uuid))`,
        {
          p: claimed.rows.at(-1)!.priority,
          s: claimed.rows.at(-1)!.scheduled_at,
          id: claimed.rows.at(-1)!.id,
        },
      );
      expect(better.rows[0]!.n).toBe(0);
      throw new Error('roll back');
    });
    await expect(check).rejects.toThrow('roll back');
  });
});

/**
 * Rows read from the jobs table (sequential scans) and entries read from its indexes by this session's
 * statements whose counts are not yet reported: read before and after the statements measured, in one
 * transaction, and subtracted (counts of earlier transactions may still be pending in the session).
 */
async function jobsRowsRead(tx: Queryable): Promise<number> {
  const res = await tx.query<{ n: number }>(
    `SELECT (pg_stat_get_xact_tuples_returned('jobs'::regclass)
             + (SELECT sum(pg_stat_get_xact_tuples_returned(indexrelid)) FROM pg_index
                WHERE indrelid = 'jobs'::regclass))::int AS n`,
  );
  return res.rows[0]!.n;
}

describe('the claim of every type after an idle spell', () => {
  let idle: TestDatabase;
  beforeAll(async () => {
    idle = await createTestDatabase();
    // Statistics taken while the queue held only finished jobs (autovacuum off, so they stay so), then a
    // burst: every estimate of ready jobs says one row (bench W3's burst).
    await idle.db.query('ALTER TABLE jobs SET (autovacuum_enabled = false)');
    const insert = (n: number, status: string, scheduledAt: string) =>
      idle.db.query(
        `INSERT INTO jobs (job_type, payload, status, attempts, priority, scheduled_at, completed_at, lease_expires_at)
         SELECT 'noop', jsonb_build_object('i', g), '${status}', ${status === 'pending' ? 0 : 1}, g % 3, ${scheduledAt},
                ${status === 'completed' ? "now() - interval '1 hour'" : 'NULL'},
                ${status === 'pending' ? 'NULL' : "now() + interval '1 hour'"}
         FROM generate_series(1, ${n}) g`,
      );
    await insert(100_000, 'completed', "now() - interval '2 hours'");
    await idle.db.query('VACUUM ANALYZE jobs');
    await insert(10_000, 'pending', "now() - interval '1 second'");
    await insert(20_000, 'retrying', "now() + interval '1 hour'");
    await insert(2_000, 'running', "now() - interval '1 minute'");
  });
  afterAll(async () => idle?.drop());

  test('reads the ready priorities in order on jobs_ready_idx, never the type index whole and sorted', async () => {
    const res = await idle.db.query<{ 'QUERY PLAN': { Plan: PlanNode }[] }>(
      `EXPLAIN (FORMAT JSON) ${claimDueJobsForWorkerSql}`,
      { now: null, limit: 100, start_now: true, dispatch_lease_seconds: 90, claim_token: null },
    );
    const all = nodes(res.rows[0]!['QUERY PLAN'][0]!.Plan);
    const jobsIndexes = all
      .filter((n) => n['Relation Name'] === 'jobs' && n['Index Name'] !== undefined)
      .map((n) => n['Index Name']);
    expect(jobsIndexes.length).toBeGreaterThan(0);
    // Its predicate says `job_type IS NOT NULL` (migration 0023): no claim of every type implies it.
    expect(jobsIndexes).not.toContain('jobs_ready_type_idx');
    const priorities = all.find((n) => n['Subplan Name'] === 'CTE ready_priorities')!;
    expect(nodes(priorities).some((n) => n['Node Type'] === 'Sort')).toBe(false);
  });

  test('a limited claim of every type walks the ready types on jobs_ready_type_idx, reading no queue whole', async () => {
    // The slotted claim (AWS's fetch-ready, a local worker's) finds the ready (type, priority) pairs with a
    // loose scan. Its walk must imply the type index's predicate on every version: PostgreSQL 17 drops an
    // `IS NOT NULL` on a NOT NULL column before planning (migration 0025). Read from this transaction's own
    // statistics, so the function's inner statements count too.
    const reads = await idle.db.transaction(async (tx) => {
      await tx.query("INSERT INTO job_slots (job_type, slot) SELECT 'noop', g FROM generate_series(0, 9) g");
      const before = await jobsRowsRead(tx);
      const claimed = await tx.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM lana_jobs_claim_slotted('{"noop": 10}'::jsonb, NULL, 10, now(), false,
           90, NULL, NULL, NULL, NULL, NULL)`,
      );
      return { claimed: claimed.rows[0]!.n, rows_read: (await jobsRowsRead(tx)) - before };
    });
    expect(reads.claimed).toBe(10);
    // 10 claimed and a few walked; the queue holds 30,000 ready and scheduled jobs.
    expect(reads.rows_read).toBeLessThan(200);
  });

  test('a worker’s claim within its holds reads only the jobs it claims and a few index entries', async () => {
    // Seven claims of 10 in one session: the first ones planned for their parameters, the later ones
    // generically (a prepared statement's plan after five runs), as a worker's claims are. Its jobs are
    // due at three priorities, which a limited type's claim within holds leaves to the full claim: the type
    // is claimed here as one without a limit, through the same walk, claim and answer.
    const reads = await idle.db.transaction(async (tx) => {
      const before = await jobsRowsRead(tx);
      let claimed = 0;
      for (let i = 0; i < 7; i++) {
        const res = await tx.query<{ applies: boolean; jobs: string }>(claimWithinHoldsSql, {
          now: null,
          limit: 10,
          limits: JSON.stringify({}),
          concurrency: 10,
          in_hand: JSON.stringify({ $settle: false, $held: {} }),
          start_now: true,
          claim_token: null,
          dispatch_lease_seconds: 90,
        });
        expect(res.rows[0]!.applies).toBe(true);
        claimed += (JSON.parse(res.rows[0]!.jobs) as unknown[]).length;
      }
      return { claimed, rows_read: (await jobsRowsRead(tx)) - before };
    });
    expect(reads.claimed).toBe(70);
    expect(reads.rows_read).toBeLessThan(7 * 200);
  });

  test('a claim of one type can still read its own range of jobs_ready_type_idx, by a parameter', async () => {
    // Run last: statistics that know the burst, and a generic plan, as a claim's cached plan is (the
    // type a parameter: `job_type = $1` implies `job_type IS NOT NULL`, so the index stays usable).
    await idle.db.query('ANALYZE jobs');
    const plan = await idle.db.transaction(async (tx) => {
      await tx.query('SET LOCAL plan_cache_mode = force_generic_plan');
      await tx.query(
        `PREPARE one_type_claim(text) AS SELECT ctid FROM jobs
         WHERE status IN ('pending', 'retrying') AND job_type = $1 AND priority = 0 AND scheduled_at <= now()
         ORDER BY scheduled_at, id LIMIT 10 FOR UPDATE SKIP LOCKED`,
      );
      const res = await tx.query<{ 'QUERY PLAN': string }>("EXPLAIN EXECUTE one_type_claim('noop')");
      await tx.query('DEALLOCATE one_type_claim');
      return res.rows.map((r) => r['QUERY PLAN']).join('\n');
    });
    expect(plan).toMatch(/Index Scan using jobs_ready_type_idx on jobs/);
    expect(plan).toMatch(/Index Cond: \(\(job_type = \$1\)/);
    expect(plan).not.toMatch(/Sort/);
  });
});
