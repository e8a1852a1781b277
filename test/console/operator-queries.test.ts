import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Database } from '../../shared/db/port.js';
import { createJobTypeRegistry, type LendingTracker } from '../../shared/job-types/index.js';
import { JobInputError } from '../../shared/jobs/errors.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { type DataApiFixture, dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/** The operator statements the console reads and acts through, over both database drivers. */
const drivers = ['node-postgres', 'Data API'] as const;

describe.each(drivers)('console operator queries over %s', (driver) => {
  let t: TestDatabase;
  let fixture: DataApiFixture | undefined;
  let db: Database;
  let tracker: LendingTracker;

  const statusOf = async (id: string) =>
    (await t.db.query<{ status: string }>('SELECT status FROM jobs WHERE id = CAST(:id AS uuid)', { id }))
      .rows[0]!.status;
  const fail = async (id: string, error: string) =>
    t.db.query(
      "UPDATE jobs SET status = 'failed', attempts = 1, completed_at = now(), last_error = :error WHERE id = CAST(:id AS uuid)",
      { id, error },
    );
  const enqueue = async (type: 'sync' | 'maintenance', key?: string) =>
    (await tracker.enqueueUntyped([{ type, payload: {}, idempotencyKey: key }]))[0]!.job.id;

  beforeAll(async () => {
    t = await createTestDatabase();
    if (driver === 'Data API') {
      fixture = await startDataApiFixture(t.url);
      db = dataApiDriverOver(fixture, t.name);
    } else db = t.db;
    tracker = new JobTracker({ db, registry: createJobTypeRegistry() });
  });
  afterAll(async () => {
    if (db !== t.db) await db?.close();
    await fixture?.close();
    await t?.drop();
  });

  test('a keyset page: newest first, each job once, the cursor ends on the last page', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push(await enqueue('sync', `page-${i}`));
    const seen: string[] = [];
    let before: string | undefined;
    for (;;) {
      const page = await tracker.listJobsPage({ jobType: 'sync' }, { before, limit: 3 });
      seen.push(...page.jobs.map((j) => j.id));
      if (!page.nextBefore) break;
      before = page.nextBefore;
    }
    expect(seen).toEqual([...ids].reverse());
    const byKey = await tracker.listJobsPage({ idempotencyKey: 'page-4' });
    expect(byKey.jobs.map((j) => j.id)).toEqual([ids[4]]);
    const future = await tracker.listJobsPage({ createdFrom: new Date(Date.now() + 3_600_000) });
    expect(future.jobs).toEqual([]);
    const recent = await tracker.listJobsPage({
      createdFrom: new Date(Date.now() - 3_600_000),
      jobType: 'sync',
    });
    expect(recent.jobs.length).toBe(7);
  });

  test('a bad filter is a JobInputError', async () => {
    await expect(tracker.listJobsPage({ status: 'lost' as never })).rejects.toBeInstanceOf(JobInputError);
    await expect(tracker.listJobsPage({ jobType: 'nope' })).rejects.toThrow(/nope/);
    await expect(tracker.listJobsPage({}, { before: 'not-an-id' })).rejects.toBeInstanceOf(JobInputError);
  });

  test('bulk retry changes exactly the failed and cancelled jobs of the filter, with a fresh budget', async () => {
    const a = await enqueue('maintenance', 'bulk-a');
    const b = await enqueue('maintenance', 'bulk-b');
    const other = await enqueue('sync', 'bulk-other');
    const untouched = await enqueue('maintenance', 'bulk-pending');
    for (const id of [a, b, other]) await fail(id, 'disk full');
    expect(await tracker.countForBulk({ jobType: 'maintenance' }, 'retry')).toBe(2);
    const retried = await tracker.retryMatching({ jobType: 'maintenance' });
    expect(retried.sort()).toEqual([a, b].sort());
    expect(await statusOf(a)).toBe('pending');
    expect(await statusOf(other)).toBe('failed');
    expect(await statusOf(untouched)).toBe('pending');
    const job = await tracker.requireJob(a);
    expect(job.maxAttempts).toBe(1 + tracker.registry.require('maintenance').retry.maxAttempts);
    expect(await tracker.countForBulk({ jobType: 'maintenance' }, 'retry')).toBe(0);
  });

  test('bulk cancel stops pending and running jobs of the filter and closes the running attempt', async () => {
    const [r] = await tracker.enqueueUntyped([
      {
        type: 'approval-processing',
        payload: { processId: '0193a1b2-0000-7000-8000-000000000001' },
        idempotencyKey: 'cancel-running',
      },
    ]);
    const running = r!.job.id;
    const waiting = await enqueue('sync', 'cancel-waiting');
    const claimed = await tracker.fetchReady(10, { jobType: 'approval-processing' });
    expect(claimed.map((j) => j.id)).toEqual([running]);
    const cancelled = await tracker.cancelMatching({ idempotencyKey: 'cancel-running' });
    expect(cancelled).toEqual([running]);
    expect(await statusOf(running)).toBe('cancelled');
    const executions = await tracker.getExecutions(running);
    expect(executions.map((e) => e.outcome)).toEqual(['cancelled']);
    expect(await statusOf(waiting)).toBe('pending');
  });

  test('failures grouped by message, with the newest example', async () => {
    const x1 = await enqueue('sync', 'fail-x1');
    const x2 = await enqueue('sync', 'fail-x2');
    const y = await enqueue('sync', 'fail-y');
    await fail(x1, 'group x');
    await fail(x2, 'group x');
    await fail(y, 'group y');
    const groups = await tracker.failureGroups();
    const gx = groups.find((g) => g.error === 'group x')!;
    expect(gx.count).toBe(2);
    expect(gx.newest?.id).toBe(x2);
    expect(groups.find((g) => g.error === 'group y')?.newest?.id).toBe(y);
  });

  test('stats count the queue and the last day, not older history; a tick job is found by key', async () => {
    const old = await enqueue('maintenance', 'stats-old');
    await t.db.query(
      "UPDATE jobs SET status = 'completed', completed_at = now() - interval '3 days' WHERE id = CAST(:id AS uuid)",
      { id: old },
    );
    const before = await tracker.stats();
    const completed = (s: typeof before) =>
      s.counts.find((c) => c.jobType === 'maintenance' && c.status === 'completed')?.count ?? 0;
    expect(completed(before)).toBe(0);
    const wide = await tracker.stats(3600, 7 * 86_400);
    expect(completed(wide)).toBe(1);
    expect((await tracker.getJobByKey('maintenance', 'stats-old'))?.id).toBe(old);
    expect(await tracker.getJobByKey('maintenance', 'no-such-key')).toBeNull();
  });
});
