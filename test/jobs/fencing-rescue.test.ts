import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { createObservability } from '../../functions/lib/powertools.js';
import { AwsExecutor } from '../../shared/aws/executor.js';
import { PgDatabase } from '../../shared/db/pg-driver.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import {
  coreKit,
  createCoreRegistry,
  executionRows,
  minutesBetween,
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

/** Default lease: 300 s timeout + 120 s grace. */
const LEASE_MINUTES = 7;

describe('fencing by attempt number', () => {
  test('a stale executor cannot overwrite a newer attempt', async () => {
    const { tracker, clock } = kit;
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    const [first] = await tracker.fetchReady(1, { startNow: true });
    // The first executor goes quiet; its lease expires and the rescuer retries the job.
    clock.advanceMinutes(LEASE_MINUTES + 1);
    const rescued = await tracker.rescueExpiredLeases();
    expect(rescued).toEqual([expect.objectContaining({ id: job.id, attempt: 1, status: 'retrying' })]);
    clock.advanceMinutes(2);
    const [second] = await tracker.fetchReady(1, { startNow: true });
    expect(second!.attempts).toBe(2);
    const before = await tracker.getJob(job.id);
    // The first executor wakes up and reports: fenced out, nothing changes.
    expect(await tracker.markCompleted(job.id, first!.attempts)).toBe(false);
    expect(await tracker.markFailed(job.id, first!.attempts, 'late failure')).toBeNull();
    expect(await tracker.completeMany([{ id: job.id, attempt: 1 }])).toEqual([]);
    expect(await tracker.failMany([{ id: job.id, attempt: 1, error: 'late' }])).toEqual([]);
    expect(await tracker.getJob(job.id)).toEqual(before);
    // A future attempt number is refused too.
    expect(await tracker.markCompleted(job.id, 3)).toBe(false);
    // The current attempt applies, once.
    expect(await tracker.markCompleted(job.id, 2)).toBe(true);
    expect(await tracker.markCompleted(job.id, 2)).toBe(false);
    expect(await tracker.markFailed(job.id, 2, 'after completion')).toBeNull();
    expect(await tracker.getJob(job.id)).toMatchObject({
      status: 'completed',
      attempts: 2,
      lastError: expect.stringMatching(/lease expired/),
    });
    const executions = await executionRows(t.db, job.id);
    expect(executions.map((e) => [e.attempt, e.outcome])).toEqual([
      [1, 'lease_expired'],
      [2, 'completed'],
    ]);
  });

  test('a job that is not running cannot be completed or failed', async () => {
    const { tracker } = kit;
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    expect(await tracker.markCompleted(job.id, 0)).toBe(false);
    expect(await tracker.markCompleted(job.id, 1)).toBe(false);
    expect(await tracker.markFailed(job.id, 1, 'x')).toBeNull();
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'pending', attempts: 0 });
    expect(await executionRows(t.db)).toEqual([]);
    await expect(tracker.markCompleted('not-a-uuid', 1)).rejects.toMatchObject({ code: 'invalid_id' });
  });

  test('a late completion racing the rescuer: exactly one wins for each job', async () => {
    const { tracker, clock } = kit;
    await tracker.enqueueMany(
      Array.from({ length: 300 }, (_, n) => ({ type: 'noop' as const, payload: { n } })),
    );
    const claimed = await tracker.fetchReady(300, { startNow: true });
    clock.advanceMinutes(LEASE_MINUTES + 1);
    const pools = [0, 1].map(() => new PgDatabase({ connectionString: t.url, max: 1 }));
    try {
      await Promise.all(pools.map((p) => p.query('SELECT 1')));
      const [executor, rescuer] = pools.map(
        (db) => new JobTracker({ db, registry: createCoreRegistry(), clock }),
      );
      const [completed, rescued] = await Promise.all([
        executor!.completeMany(claimed.map((j) => ({ id: j.id, attempt: j.attempts }))),
        rescuer!.rescueExpiredLeases(),
      ]);
      const rescuedIds = rescued.map((r) => r.id);
      expect(completed.length + rescuedIds.length).toBe(300);
      expect(new Set([...completed, ...rescuedIds]).size).toBe(300);
      expect(await statusCounts(t.db)).toEqual({
        ...(completed.length ? { completed: completed.length } : {}),
        ...(rescuedIds.length ? { retrying: rescuedIds.length } : {}),
      });
      const executions = await executionRows(t.db);
      expect(executions).toHaveLength(300); // exactly one row for attempt 1 of each job
      expect(executions.filter((e) => e.outcome === 'completed')).toHaveLength(completed.length);
      expect(executions.filter((e) => e.outcome === 'lease_expired')).toHaveLength(rescuedIds.length);
    } finally {
      await Promise.all(pools.map((p) => p.close()));
    }
  });

  test('a duplicate delivery of one attempt runs the executor once', async () => {
    const { tracker, dispatcher, services } = kit;
    const { job } = await tracker.enqueue({ type: 'noop', payload: { n: 9 } });
    const [claimed] = await tracker.fetchReady(1);
    // The executor Lambda's loop, as deployed (shared/aws/executor.ts).
    const executor = new AwsExecutor({
      tracker,
      dispatcher,
      jobType: 'noop',
      log: createObservability('test', { silent: true }).logger,
    });
    const delivery = { jobId: job.id, attempt: claimed!.attempts };
    const [a, b] = await Promise.all([executor.run(delivery), executor.run(delivery)]);
    expect([a.outcome, b.outcome].sort()).toEqual(['completed', 'duplicate']);
    expect(services.runs).toHaveLength(1);
    // A delivery of an attempt that is no longer current runs nothing either.
    expect(await executor.run({ jobId: job.id, attempt: 2 })).toEqual({
      outcome: 'duplicate',
      nextJobsRun: 0,
    });
    expect(services.runs).toHaveLength(1);
  });
});

describe('lease rescue', () => {
  test('an expired lease is a failed attempt under the retry rule; live leases are left alone', async () => {
    const { tracker, clock } = kit;
    const [a, b] = await tracker.enqueueMany([
      { type: 'noop', payload: { n: 1 } },
      { type: 'short-retries', payload: {} }, // lease 125 s
    ]);
    await tracker.fetchReady(2, { startNow: true });
    clock.advance(125_000);
    expect(await tracker.rescueExpiredLeases()).toEqual([]); // at expiry, not yet expired
    clock.advance(1);
    const rescued = await tracker.rescueExpiredLeases();
    expect(rescued).toEqual([
      {
        id: b!.job.id,
        jobType: 'short-retries',
        attempt: 1,
        status: 'retrying',
        scheduledAt: new Date(clock.now().getTime() + 15_000),
        undelivered: false,
      },
    ]);
    expect(await tracker.getJob(a!.job.id)).toMatchObject({ status: 'running' });
    const row = await tracker.getJob(b!.job.id);
    expect(row!.lastError).toBe('lease expired: the executor did not report within 125 s');
    expect(await executionRows(t.db, b!.job.id)).toEqual([
      expect.objectContaining({ attempt: 1, outcome: 'lease_expired', duration_ms: 125_001 }),
    ]);
    expect((await tracker.stats()).overdueRunning).toBe(0);
    clock.advanceMinutes(LEASE_MINUTES);
    expect((await tracker.stats()).overdueRunning).toBe(1);
  });

  test('rescue walks the backoff and ends in failed: nothing stays running forever', async () => {
    const { tracker, clock } = kit;
    const { job } = await tracker.enqueue({ type: 'noop', payload: {}, maxAttempts: 3 });
    const delays: number[] = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      const [claimed] = await tracker.fetchReady(1, { startNow: true });
      expect(claimed!.attempts).toBe(attempt);
      clock.advanceMinutes(LEASE_MINUTES + 1);
      const [rescued] = await tracker.rescueExpiredLeases();
      expect(rescued).toMatchObject({ id: job.id, attempt, status: attempt < 3 ? 'retrying' : 'failed' });
      if (rescued!.status === 'retrying') {
        delays.push(minutesBetween(clock.now(), rescued!.scheduledAt));
        clock.set(rescued!.scheduledAt);
      }
    }
    expect(delays).toEqual([2, 4]);
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'failed', attempts: 3 });
    expect((await executionRows(t.db, job.id)).map((e) => e.outcome)).toEqual([
      'lease_expired',
      'lease_expired',
      'lease_expired',
    ]);
    expect(await tracker.rescueExpiredLeases()).toEqual([]);
  });

  test('rescue is bounded per call', async () => {
    const { tracker, clock } = kit;
    await tracker.enqueueMany(Array.from({ length: 5 }, () => ({ type: 'noop' as const, payload: {} })));
    await tracker.fetchReady(5, { startNow: true });
    clock.advanceMinutes(LEASE_MINUTES + 1);
    expect(await tracker.rescueExpiredLeases(3)).toHaveLength(3);
    expect(await tracker.rescueExpiredLeases(3)).toHaveLength(2);
    expect(await statusCounts(t.db)).toEqual({ retrying: 5 });
  });
});

describe('release', () => {
  test('an unstarted claim is handed back: due at once, the attempt not counted', async () => {
    const { tracker, clock } = kit;
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    const [claimed] = await tracker.fetchReady(1);
    expect(await tracker.release([{ id: job.id, attempt: claimed!.attempts }])).toEqual([job.id]);
    expect(await tracker.getJob(job.id)).toMatchObject({
      status: 'pending',
      attempts: 1,
      maxAttempts: 7,
      startedAt: null,
    });
    // A second release of the same claim is a no-op.
    expect(await tracker.release([{ id: job.id, attempt: 1 }])).toEqual([]);
    const [again] = await tracker.fetchReady(1);
    expect(again!.attempts).toBe(2); // attempt numbers are never reissued
    // The released attempt does not count toward the backoff: this first real failure waits 2 minutes.
    const failure = await tracker.markFailed(job.id, 2, 'x');
    expect(minutesBetween(clock.now(), failure!.scheduledAt)).toBe(2);
    expect((await executionRows(t.db, job.id)).map((e) => [e.attempt, e.outcome])).toEqual([
      [1, 'released'],
      [2, 'failed'],
    ]);
  });

  test('a begun attempt is not released unless asked; a released retrying job stays retrying', async () => {
    const { tracker, clock } = kit;
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    await tracker.fetchReady(1);
    await tracker.markFailed(job.id, 1, 'x');
    clock.advanceMinutes(2);
    await tracker.fetchReady(1);
    expect(await tracker.startAttempt(job.id, 2)).not.toBeNull();
    expect(await tracker.release([{ id: job.id, attempt: 2 }])).toEqual([]);
    expect(await tracker.release([{ id: job.id, attempt: 2 }], { requireUnstarted: false })).toEqual([
      job.id,
    ]);
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'retrying', attempts: 2, maxAttempts: 7 });
    // Its next failure still waits 4 minutes: one real failure before it.
    await tracker.fetchReady(1);
    const failure = await tracker.markFailed(job.id, 3, 'y');
    expect(minutesBetween(clock.now(), failure!.scheduledAt)).toBe(4);
  });
});
