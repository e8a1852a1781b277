import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { PgDatabase } from '../../shared/db/pg-driver.js';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { recordResult, runDeliveredAttempt } from '../../shared/jobs/run-attempt.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { createTestRegistry, type TestServices } from '../support/test-job-types.js';

let t: TestDatabase;
let clock: ManualClock;
let tracker: JobTracker<ReturnType<typeof createTestRegistry>['schemas'], TestServices>;
let services: TestServices;
let dispatcher: JobDispatcher<ReturnType<typeof createTestRegistry>['schemas'], TestServices>;

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_executions');
  clock = new ManualClock('2026-03-01T00:00:00Z');
  const registry = createTestRegistry();
  tracker = new JobTracker({ db: t.db, registry, clock });
  services = { runs: [] };
  dispatcher = new JobDispatcher(registry, services);
});

const minutes = (a: Date, b: Date) => (b.getTime() - a.getTime()) / 60_000;

describe('claiming', () => {
  test('claims due jobs by priority then due time; future jobs wait', async () => {
    const [late, early, urgent, future] = await tracker.enqueueMany([
      { type: 'noop', payload: { n: 1 }, runAt: new Date('2026-02-28T23:00:00Z') },
      { type: 'noop', payload: { n: 2 }, runAt: new Date('2026-02-28T22:00:00Z') },
      { type: 'noop', payload: { n: 3 }, runAt: new Date('2026-02-28T23:30:00Z'), priority: -1 },
      { type: 'noop', payload: { n: 4 }, runAt: new Date('2026-03-01T00:05:00Z') },
    ]);
    const claimed = await tracker.fetchReady(10);
    expect(claimed.map((j) => j.id)).toEqual([urgent!.job.id, early!.job.id, late!.job.id]);
    const row = await tracker.getJob(early!.job.id);
    expect(row).toMatchObject({ status: 'running', attempts: 1, startedAt: null });
    // The lease: the type's timeout (300 s by default) plus 120 s of grace.
    expect(row!.leaseExpiresAt).toEqual(new Date(clock.now().getTime() + 420_000));
    clock.advanceMinutes(5);
    expect((await tracker.fetchReady(10)).map((j) => j.id)).toEqual([future!.job.id]);
  });

  test('4 concurrent claimers on separate connections drain 5,000 jobs, each claimed exactly once', async () => {
    await tracker.enqueueMany(
      Array.from({ length: 5000 }, (_, n) => ({ type: 'noop' as const, payload: { n } })),
    );
    const pools = Array.from({ length: 4 }, () => new PgDatabase({ connectionString: t.url, max: 1 }));
    try {
      const claimers = pools.map((db) => new JobTracker({ db, registry: createTestRegistry(), clock }));
      const claimedBy = await Promise.all(
        claimers.map(async (c) => {
          const mine: string[] = [];
          for (;;) {
            const batch = await c.fetchReady(37, { startNow: true });
            if (batch.length === 0) return mine;
            mine.push(...batch.map((j) => j.id));
            await c.completeMany(batch.map((j) => ({ id: j.id, attempt: j.attempts })));
          }
        }),
      );
      const all = claimedBy.flat();
      expect(all).toHaveLength(5000);
      expect(new Set(all).size).toBe(5000);
      expect(claimedBy.filter((ids) => ids.length > 0).length).toBeGreaterThan(1);
      const counts = await t.db.query<{ completed: number; executions: number; attempts: number }>(
        `SELECT count(*) FILTER (WHERE status = 'completed')::int AS completed,
                (SELECT count(*) FROM job_executions)::int AS executions, max(attempts)::int AS attempts FROM jobs`,
      );
      expect(counts.rows[0]).toEqual({ completed: 5000, executions: 5000, attempts: 1 });
    } finally {
      await Promise.all(pools.map((p) => p.close()));
    }
  });

  test('the claim reads the ready index in order: no sort, no sequential scan', async () => {
    await tracker.enqueueMany(
      Array.from({ length: 5000 }, (_, n) => ({ type: 'noop' as const, payload: { n } })),
    );
    await t.db.query('ANALYZE jobs');
    const plan = await t.db.query<{ 'QUERY PLAN': string }>(
      `EXPLAIN SELECT id FROM jobs
       WHERE status IN ('pending', 'retrying') AND scheduled_at <= now()
       ORDER BY priority, scheduled_at, id LIMIT 50 FOR UPDATE SKIP LOCKED`,
    );
    const text = plan.rows.map((r) => r['QUERY PLAN']).join('\n');
    expect(text).toMatch(/Index Scan using jobs_ready_idx/);
    expect(text).not.toMatch(/Sort/);
    expect(text).not.toMatch(/Seq Scan/);
  });
});

describe('the retry rule', () => {
  test('a failing job walks the seed schedule 2, 4, 8, 16, 32 minutes, then fails', async () => {
    const { job } = await tracker.enqueue({ type: 'always-fails', payload: { reason: 'boom' } });
    const delays: number[] = [];
    for (let attempt = 1; attempt <= 6; attempt++) {
      const [claimed] = await tracker.fetchReady(1);
      expect(claimed).toMatchObject({ id: job.id, attempts: attempt });
      const result = await dispatcher.dispatch(claimed!);
      const recorded = await recordResult(tracker, claimed!, result);
      if (attempt < 6) {
        expect(recorded.recorded).toBe('retrying');
        const row = await tracker.getJob(job.id);
        expect(row!.status).toBe('retrying');
        expect(row!.lastError).toBe('boom');
        delays.push(minutes(clock.now(), row!.scheduledAt));
        // Not claimable a moment before it is due.
        clock.set(new Date(row!.scheduledAt.getTime() - 1000));
        expect(await tracker.fetchReady(1)).toEqual([]);
        clock.set(row!.scheduledAt);
      } else {
        expect(recorded.recorded).toBe('failed');
      }
    }
    expect(delays).toEqual([2, 4, 8, 16, 32]);
    const final = await tracker.getJob(job.id);
    expect(final).toMatchObject({ status: 'failed', attempts: 6, lastError: 'boom' });
    expect(final!.completedAt).toEqual(clock.now());
    const executions = await tracker.getExecutions(job.id);
    expect(executions.map((e) => [e.attempt, e.outcome])).toEqual(
      [1, 2, 3, 4, 5, 6].map((a) => [a, 'failed']),
    );
    expect(services.runs.filter((r) => r.type === 'always-fails')).toHaveLength(6);
  });

  test('a job type overrides max attempts and the cap', async () => {
    const { job } = await tracker.enqueue({ type: 'short-retries', payload: {} });
    const delays: number[] = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      const [claimed] = await tracker.fetchReady(1);
      const failure = await tracker.markFailed(claimed!.id, claimed!.attempts, 'nope');
      if (failure!.status === 'retrying') {
        delays.push((failure!.scheduledAt.getTime() - clock.now().getTime()) / 1000);
        clock.set(failure!.scheduledAt);
      }
    }
    expect(delays).toEqual([15, 15]); // min(10 * 2^n, 15)
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'failed', attempts: 3 });
  });

  test('an unknown type or an invalid payload found at dispatch fails at once, with the reason', async () => {
    await t.db.query(
      `INSERT INTO jobs (job_type, payload, scheduled_at)
       VALUES ('retired-type', '{}', '2026-03-01Z'), ('always-fails', '{"reason": 7}', '2026-03-01Z')`,
    );
    const claimed = await tracker.fetchReady(10);
    expect(claimed).toHaveLength(2);
    for (const job of claimed) await recordResult(tracker, job, await dispatcher.dispatch(job));
    const rows = await tracker.listJobs();
    const byType = Object.fromEntries(rows.map((r) => [r.jobType, r]));
    expect(byType['retired-type']).toMatchObject({ status: 'failed', attempts: 1 });
    expect(byType['retired-type']!.lastError).toMatch(/unknown job type "retired-type"/);
    expect(byType['always-fails']).toMatchObject({ status: 'failed', attempts: 1 });
    expect(byType['always-fails']!.lastError).toMatch(/payload\.reason/);
    expect(services.runs).toEqual([]);
  });

  test('an executor can ask to run again at a given time', async () => {
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    const [claimed] = await tracker.fetchReady(1);
    const at = new Date('2026-03-01T06:00:00Z');
    const failure = await tracker.markFailed(claimed!.id, 1, 'waiting for the ledger', { retryAt: at });
    expect(failure).toMatchObject({ status: 'retrying', scheduledAt: at });
    expect((await tracker.getExecutions(job.id))[0]!.outcome).toBe('retry_requested');
  });
});

describe('fencing, rescue, release', () => {
  test('a stale attempt cannot overwrite a newer one', async () => {
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    const [first] = await tracker.fetchReady(1);
    // The first executor goes quiet; its lease expires and the rescuer retries the job.
    clock.advanceMinutes(10);
    const rescued = await tracker.rescueExpiredLeases();
    expect(rescued).toEqual([expect.objectContaining({ id: job.id, attempt: 1, status: 'retrying' })]);
    clock.advanceMinutes(3);
    const [second] = await tracker.fetchReady(1);
    expect(second!.attempts).toBe(2);
    // The first executor wakes up and reports: fenced out, nothing changes.
    expect(await tracker.markCompleted(job.id, first!.attempts)).toBe(false);
    expect(await tracker.markFailed(job.id, first!.attempts, 'late')).toBeNull();
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'running', attempts: 2 });
    expect(await tracker.markCompleted(job.id, 2)).toBe(true);
    const executions = await tracker.getExecutions(job.id);
    expect(executions.map((e) => [e.attempt, e.outcome])).toEqual([
      [1, 'lease_expired'],
      [2, 'completed'],
    ]);
  });

  test('lease rescue follows the retry rule and ends in failed after the last attempt', async () => {
    const { job } = await tracker.enqueue({ type: 'noop', payload: {}, maxAttempts: 2 });
    await tracker.fetchReady(1);
    clock.advanceMinutes(8);
    expect(await tracker.rescueExpiredLeases()).toEqual([expect.objectContaining({ status: 'retrying' })]);
    expect(minutes(clock.now(), (await tracker.getJob(job.id))!.scheduledAt)).toBe(2);
    clock.advanceMinutes(2);
    await tracker.fetchReady(1);
    clock.advanceMinutes(8);
    expect(await tracker.rescueExpiredLeases()).toEqual([expect.objectContaining({ status: 'failed' })]);
    const final = await tracker.getJob(job.id);
    expect(final!.lastError).toMatch(/lease expired/);
  });

  test('a duplicate delivery of an attempt runs nothing', async () => {
    const { job } = await tracker.enqueue({ type: 'noop', payload: { n: 9 } });
    const [claimed] = await tracker.fetchReady(1);
    const delivery = { id: job.id, attempt: claimed!.attempts };
    const [a, b] = await Promise.all([
      runDeliveredAttempt(tracker, dispatcher, delivery),
      runDeliveredAttempt(tracker, dispatcher, delivery),
    ]);
    expect([a.recorded, b.recorded].sort()).toEqual(['completed', 'duplicate']);
    expect(services.runs).toHaveLength(1);
  });

  test('release hands back an unstarted claim: due again, the attempt not counted', async () => {
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    const [claimed] = await tracker.fetchReady(1);
    expect(await tracker.release([{ id: job.id, attempt: claimed!.attempts }])).toEqual([job.id]);
    const row = await tracker.getJob(job.id);
    expect(row).toMatchObject({ status: 'pending', attempts: 1, maxAttempts: 7 });
    const [again] = await tracker.fetchReady(1);
    expect(again!.attempts).toBe(2); // attempt numbers are never reissued
    // A started attempt is not released.
    await tracker.startAttempt(job.id, 2);
    expect(await tracker.release([{ id: job.id, attempt: 2 }])).toEqual([]);
    expect((await tracker.getExecutions(job.id)).map((e) => e.outcome)).toEqual(['released', null]);
  });
});

describe('operator actions', () => {
  test('cancel a running job: its late completion is fenced out', async () => {
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    const [claimed] = await tracker.fetchReady(1);
    expect((await tracker.cancel(job.id)).status).toBe('cancelled');
    expect(await tracker.markCompleted(job.id, claimed!.attempts)).toBe(false);
    expect((await tracker.getExecutions(job.id)).map((e) => e.outcome)).toEqual(['cancelled']);
    await expect(tracker.cancel(job.id)).rejects.toThrow(/is cancelled/);
  });

  test('retry a failed job: pending now, fresh budget, backoff restarts at 2 minutes', async () => {
    const { job } = await tracker.enqueue({ type: 'always-fails', payload: { reason: 'x' }, maxAttempts: 1 });
    await tracker.fetchReady(1);
    await tracker.markFailed(job.id, 1, 'x');
    await expect(tracker.retry('00000000-0000-4000-8000-000000000000')).rejects.toThrow(/no job with id/);
    const retried = await tracker.retry(job.id);
    expect(retried).toMatchObject({ status: 'pending', attempts: 1, maxAttempts: 7 });
    await tracker.fetchReady(1);
    const failure = await tracker.markFailed(job.id, 2, 'again');
    expect(failure!.status).toBe('retrying');
    expect(minutes(clock.now(), failure!.scheduledAt)).toBe(2);
    await expect(tracker.retry(job.id)).rejects.toThrow(/only failed or cancelled/);
  });

  test('stats: counts, queue depth and age, last-hour failure rate', async () => {
    await tracker.enqueue({ type: 'noop', payload: {}, runAt: new Date('2026-02-28T23:50:00Z') });
    await tracker.enqueue({ type: 'always-fails', payload: { reason: 'x' } });
    const [a] = await tracker.fetchReady(1);
    await tracker.markCompleted(a!.id, 1);
    const [b] = await tracker.fetchReady(1);
    await tracker.markFailed(b!.id, 1, 'x');
    await tracker.enqueue({ type: 'noop', payload: {}, runAt: new Date('2026-02-28T23:55:00Z') });
    const stats = await tracker.stats();
    expect(stats.queue).toEqual({ depth: 1, oldestReadyAgeSeconds: 300 });
    expect(stats.counts).toEqual(
      expect.arrayContaining([
        { jobType: 'noop', status: 'completed', count: 1 },
        { jobType: 'always-fails', status: 'retrying', count: 1 },
      ]),
    );
    expect(stats.lastHour.find((h) => h.jobType === 'always-fails')).toMatchObject({
      failed: 1,
      failureRate: 1,
    });
  });

  test('prune deletes old completed jobs with their executions, keeps failed ones', async () => {
    const [done, failed] = await tracker.enqueueMany([
      { type: 'noop', payload: {} },
      { type: 'always-fails', payload: { reason: 'x' }, maxAttempts: 1 },
    ]);
    await tracker.fetchReady(2);
    await tracker.markCompleted(done!.job.id, 1);
    await tracker.markFailed(failed!.job.id, 1, 'x');
    expect(await tracker.pruneFinished({ before: clock.now(), statuses: ['completed'] })).toBe(0);
    clock.advanceMinutes(60 * 24 * 31);
    expect(
      await tracker.pruneFinished({
        before: new Date(clock.now().getTime() - 30 * 86_400_000),
        statuses: ['completed'],
      }),
    ).toBe(1);
    expect(await tracker.getJob(done!.job.id)).toBeNull();
    expect(await tracker.getExecutions(done!.job.id)).toEqual([]);
    expect((await tracker.getJob(failed!.job.id))!.status).toBe('failed');
  });
});
