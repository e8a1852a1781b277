import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { PgDatabase } from '../../shared/db/pg-driver.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import {
  asDatabase,
  coreKit,
  countingQueryable,
  createCoreRegistry,
  statusCounts,
} from '../support/lifecycle.js';

let t: TestDatabase;
let kit: ReturnType<typeof coreKit>;

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_execution_records');
  kit = coreKit(t.db);
});

describe('fetchReady', () => {
  test('one statement sets running, counts the attempt, starts the lease', async () => {
    const { tracker, clock } = kit;
    const { job } = await tracker.enqueue({ type: 'noop', payload: { n: 1 } });
    const counting = countingQueryable(t.db);
    const viaCounter = new JobTracker({
      db: asDatabase(counting),
      registry: kit.registry,
      clock,
    });
    const claimed = await viaCounter.fetchReady(10);
    expect(counting.statements).toHaveLength(1);
    expect(counting.statements[0]).toMatch(/FOR UPDATE SKIP LOCKED/);
    expect(claimed).toEqual([
      expect.objectContaining({
        id: job.id,
        jobType: 'noop',
        payload: { n: 1 },
        attempts: 1,
        maxAttempts: 6,
      }),
    ]);
    // A claim for executors elsewhere holds the short dispatch lease; their start renews it to the run's.
    expect(claimed[0]!.leaseExpiresAt).toEqual(new Date(clock.now().getTime() + 90_000));
    const row = await tracker.getJob(job.id);
    expect(row).toMatchObject({ status: 'running', attempts: 1, startedAt: null });
    expect(row!.leaseExpiresAt).toEqual(claimed[0]!.leaseExpiresAt);
    // Claimed jobs are not claimable again.
    expect(await tracker.fetchReady(10)).toEqual([]);
  });

  test('startNow also sets started_at (an in-process worker runs the attempt at once)', async () => {
    const { tracker, clock } = kit;
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    await tracker.fetchReady(1, { startNow: true });
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'running', startedAt: clock.now() });
    // A second start of the same attempt is refused (it already began).
    expect(await tracker.startAttempt(job.id, 1)).toBeNull();
  });

  test('the lease follows the type timeout', async () => {
    const { tracker, clock } = kit;
    await tracker.enqueue({ type: 'short-retries', payload: {} }); // timeoutSeconds: 5
    // Begun at the claim (a local worker), or at the executor's start: the type's timeout plus 120 s.
    const [claimed] = await tracker.fetchReady(1, { startNow: true });
    expect(claimed!.leaseExpiresAt).toEqual(new Date(clock.now().getTime() + 125_000));
    const { job } = await tracker.enqueue({ type: 'short-retries', payload: {} });
    await tracker.fetchReady(1);
    expect((await tracker.startAttempt(job.id, 1))!.leaseExpiresAt).toEqual(
      new Date(clock.now().getTime() + 125_000),
    );
  });

  test('priority first, then due time; future jobs wait until due', async () => {
    const { tracker, clock } = kit;
    // Enqueued before their due times: a run time already past is stored as now.
    clock.set('2026-02-28T21:00:00Z');
    const [late, early, urgent, future, lazy] = await tracker.enqueueMany([
      { type: 'noop', payload: { n: 1 }, runAt: new Date('2026-02-28T23:00:00Z') },
      { type: 'noop', payload: { n: 2 }, runAt: new Date('2026-02-28T22:00:00Z') },
      { type: 'noop', payload: { n: 3 }, runAt: new Date('2026-02-28T23:30:00Z'), priority: -1 },
      { type: 'noop', payload: { n: 4 }, runAt: new Date('2026-03-01T00:05:00Z'), priority: -10 },
      { type: 'noop', payload: { n: 5 }, runAt: new Date('2026-02-01T00:00:00Z'), priority: 7 },
    ]);
    clock.set('2026-03-01T00:00:00Z');
    const claimed = await tracker.fetchReady(10);
    expect(claimed.map((j) => j.id)).toEqual([urgent!.job.id, early!.job.id, late!.job.id, lazy!.job.id]);
    expect(await tracker.getJob(future!.job.id)).toMatchObject({ status: 'pending', attempts: 0 });
    clock.advance(5 * 60_000 - 1);
    expect(await tracker.fetchReady(10)).toEqual([]); // a millisecond early
    clock.advance(1);
    expect((await tracker.fetchReady(10)).map((j) => j.id)).toEqual([future!.job.id]);
  });

  test('the limit is respected and the best jobs go first', async () => {
    const { tracker } = kit;
    const results = await tracker.enqueueMany(
      Array.from({ length: 20 }, (_, n) => ({ type: 'noop' as const, payload: { n }, priority: 20 - n })),
    );
    const first = await tracker.fetchReady(5);
    expect(first.map((j) => (j.payload as { n: number }).n)).toEqual([19, 18, 17, 16, 15]);
    const rest = await tracker.fetchReady(100);
    expect(rest).toHaveLength(15);
    expect(new Set([...first, ...rest].map((j) => j.id))).toEqual(new Set(results.map((r) => r.job.id)));
    await expect(tracker.fetchReady(0)).rejects.toMatchObject({ code: 'invalid_option' });
    await expect(tracker.fetchReady(1.5)).rejects.toMatchObject({ code: 'invalid_option' });
  });

  test('only pending and retrying jobs are claimed; finished, cancelled and running ones are not', async () => {
    const { tracker } = kit;
    const [done, failed, cancelled, running, retrying, pending] = await tracker.enqueueMany([
      { type: 'noop', payload: { n: 1 } },
      { type: 'noop', payload: { n: 2 }, maxAttempts: 1 },
      { type: 'noop', payload: { n: 3 } },
      { type: 'noop', payload: { n: 4 } },
      { type: 'noop', payload: { n: 5 } },
      { type: 'noop', payload: { n: 6 }, priority: 1 },
    ]);
    await tracker.fetchReady(5);
    await tracker.markCompleted(done!.job.id, 1);
    await tracker.markFailed(failed!.job.id, 1, 'x');
    await tracker.cancel(cancelled!.job.id);
    await tracker.markFailed(retrying!.job.id, 1, 'x', { retryAt: new Date('2026-02-01T00:00:00Z') });
    expect(await statusCounts(t.db)).toEqual({
      cancelled: 1,
      completed: 1,
      failed: 1,
      pending: 1,
      retrying: 1,
      running: 1,
    });
    const claimed = await tracker.fetchReady(100);
    expect(claimed.map((j) => [j.id, j.attempts])).toEqual([
      [retrying!.job.id, 2],
      [pending!.job.id, 1],
    ]);
    expect((await tracker.getJob(running!.job.id))!.attempts).toBe(1);
  });

  test('4 concurrent claimers on separate pools drain 5,000 jobs, each claimed exactly once', async () => {
    const { tracker, clock } = kit;
    await tracker.enqueueMany(
      Array.from({ length: 5000 }, (_, n) => ({ type: 'noop' as const, payload: { n }, priority: n % 3 })),
    );
    const pools = Array.from({ length: 4 }, () => new PgDatabase({ connectionString: t.url, max: 1 }));
    try {
      await Promise.all(pools.map((p) => p.query('SELECT 1')));
      const claimers = pools.map((db) => new JobTracker({ db, registry: createCoreRegistry(), clock }));
      let inFlight = 0;
      let maxInFlight = 0;
      const claimedBy = await Promise.all(
        claimers.map(async (c) => {
          const mine: string[] = [];
          for (;;) {
            inFlight++;
            maxInFlight = Math.max(maxInFlight, inFlight);
            const batch = await c.fetchReady(37, { startNow: true });
            inFlight--;
            if (batch.length === 0) return mine;
            mine.push(...batch.map((j) => j.id));
            expect(await c.completeMany(batch.map((j) => ({ id: j.id, attempt: j.attempts })))).toHaveLength(
              batch.length,
            );
          }
        }),
      );
      const all = claimedBy.flat();
      expect(all).toHaveLength(5000);
      expect(new Set(all).size).toBe(5000); // nobody got a job twice
      expect(maxInFlight).toBeGreaterThan(1); // the claims really overlapped
      expect(claimedBy.filter((ids) => ids.length > 0).length).toBeGreaterThan(1);
      const counts = await t.db.query<{ completed: number; executions: number; max_attempts: number }>(
        `SELECT count(*) FILTER (WHERE status = 'completed')::int AS completed,
                (SELECT count(*) FROM job_executions)::int AS executions,
                max(attempts)::int AS max_attempts FROM jobs`,
      );
      expect(counts.rows[0]).toEqual({ completed: 5000, executions: 5000, max_attempts: 1 });
    } finally {
      await Promise.all(pools.map((p) => p.close()));
    }
  });

  test('a claimer skips rows another claimer has locked instead of waiting', async () => {
    const { tracker, clock } = kit;
    await tracker.enqueueMany([
      { type: 'noop', payload: { n: 1 } },
      { type: 'noop', payload: { n: 2 } },
    ]);
    const other = new PgDatabase({ connectionString: t.url, max: 1 });
    try {
      const otherTracker = new JobTracker({ db: other, registry: createCoreRegistry(), clock });
      // Hold the first claim's transaction open: its row stays locked.
      const held = await t.db.transaction(async (tx) => {
        const heldTracker = new JobTracker({
          db: asDatabase(tx),
          registry: createCoreRegistry(),
          clock,
        });
        const mine = await heldTracker.fetchReady(1);
        const theirs = await otherTracker.fetchReady(10); // does not block, does not see the locked row
        return { mine, theirs };
      });
      expect(held.mine).toHaveLength(1);
      expect(held.theirs).toHaveLength(1);
      expect(held.theirs[0]!.id).not.toBe(held.mine[0]!.id);
    } finally {
      await other.close();
    }
  });
});

describe('claimForWorker', () => {
  test('a short claim also says when the next waiting job is due, in the same statement', async () => {
    const { tracker, registry, clock } = kit;
    const inFiveMinutes = new Date(clock.now().getTime() + 5 * 60_000);
    const due = await tracker.enqueueMany([
      { type: 'noop', payload: { n: 1 } },
      { type: 'noop', payload: { n: 2 } },
    ]);
    const later = await tracker.enqueue({ type: 'noop', payload: { n: 3 }, runAt: inFiveMinutes });
    const counting = countingQueryable(t.db);
    const viaCounter = new JobTracker({ db: asDatabase(counting), registry, clock });

    // Full: more may be due, so no next time.
    const full = await viaCounter.claimForWorker(1);
    expect(full.jobs.map((j) => j.id)).toEqual([due[0]!.job.id]);
    expect(full.nextDueAt).toBeUndefined();
    // Short: the job it claimed does not count as waiting; the one due in five minutes does.
    const short = await viaCounter.claimForWorker(10);
    expect(short.jobs.map((j) => j.id)).toEqual([due[1]!.job.id]);
    expect(short.jobs[0]).toMatchObject({ attempts: 1, leaseExpiresAt: expect.any(Date) });
    expect(short.nextDueAt).toEqual(later.job.scheduledAt);
    expect(counting.statements).toHaveLength(2);
    // Nothing claimed and nothing waiting once the last job runs.
    clock.advance(5 * 60_000);
    expect((await viaCounter.claimForWorker(10)).jobs).toHaveLength(1);
    expect(await viaCounter.claimForWorker(10)).toMatchObject({ jobs: [], nextDueAt: null });
    expect(await statusCounts(t.db)).toEqual({ running: 3 });
  });

  test('under a per-row limit (the Data API) it claims rows and asks for the next due time separately', async () => {
    const { tracker, registry, clock } = kit;
    await tracker.enqueue({ type: 'noop', payload: { n: 1 } });
    const later = await tracker.enqueue({
      type: 'noop',
      payload: { n: 2 },
      runAt: new Date(clock.now().getTime() + 60_000),
    });
    const counting = countingQueryable(t.db);
    const rowLimited = new JobTracker({
      db: { ...asDatabase(counting), maxRowBytes: 64_000 },
      registry,
      clock,
    });
    const claim = await rowLimited.claimForWorker(5);
    expect(claim.jobs).toHaveLength(1);
    expect(claim.nextDueAt).toEqual(later.job.scheduledAt);
    expect(counting.statements).toHaveLength(2);
  });
});
