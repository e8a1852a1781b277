import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { pgQueryable } from '../../shared/db/pg-driver.js';
import { claimDueJobsSql } from '../../shared/jobs/sql.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { coreKit, executionRows, minutesBetween, waitFor } from '../support/lifecycle.js';

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

describe('cancel', () => {
  test('a pending job: cancelled, never claimed, no attempt recorded', async () => {
    const { tracker, clock } = kit;
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    const cancelled = await tracker.cancel(job.id, 'customer withdrew');
    expect(cancelled).toMatchObject({
      id: job.id,
      status: 'cancelled',
      attempts: 0,
      lastError: 'customer withdrew',
      completedAt: clock.now(),
    });
    expect(await tracker.fetchReady(10)).toEqual([]);
    expect(await executionRows(t.db)).toEqual([]);
  });

  test('a retrying job: cancelled, never claimed again', async () => {
    const { tracker, clock } = kit;
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    await tracker.fetchReady(1);
    await tracker.markFailed(job.id, 1, 'x');
    expect((await tracker.cancel(job.id)).status).toBe('cancelled');
    clock.advanceMinutes(60);
    expect(await tracker.fetchReady(10)).toEqual([]);
    expect((await executionRows(t.db, job.id)).map((e) => e.outcome)).toEqual(['failed']);
  });

  test('a running job: its attempt is closed, and its late completion is fenced out', async () => {
    const { tracker } = kit;
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    const [claimed] = await tracker.fetchReady(1, { startNow: true });
    expect(await tracker.cancel(job.id)).toMatchObject({
      status: 'cancelled',
      lastError: 'cancelled by an operator',
    });
    expect(await tracker.markCompleted(job.id, claimed!.attempts)).toBe(false);
    expect(await tracker.markFailed(job.id, claimed!.attempts, 'late')).toBeNull();
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'cancelled', attempts: 1 });
    expect(await executionRows(t.db, job.id)).toEqual([
      expect.objectContaining({ attempt: 1, outcome: 'cancelled' }),
    ]);
    // Cancelled jobs are not rescued either.
    kit.clock.advanceMinutes(60);
    expect(await tracker.rescueExpiredLeases()).toEqual([]);
  });

  test('finished jobs and unknown ids cannot be cancelled', async () => {
    const { tracker } = kit;
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    await tracker.fetchReady(1);
    await tracker.markCompleted(job.id, 1);
    await expect(tracker.cancel(job.id)).rejects.toMatchObject({
      code: 'invalid_state',
      message: expect.stringMatching(/is completed/),
    });
    await expect(tracker.cancel('00000000-0000-4000-8000-000000000000')).rejects.toMatchObject({
      code: 'job_not_found',
    });
    await expect(tracker.cancel('nope')).rejects.toMatchObject({ code: 'invalid_id' });
  });

  test('a cancel that waits on a concurrent claim closes the attempt that claim started', async () => {
    const { tracker, clock } = kit;
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    const claimer = new pg.Client({ connectionString: t.url });
    await claimer.connect();
    try {
      // A claimer's statement has taken the row but not committed yet.
      await claimer.query('BEGIN');
      const claimed = await pgQueryable(claimer).query(claimDueJobsSql, {
        now: clock.now(),
        limit: 1,
        start_now: true,
        dispatch_lease_seconds: 90,
        claim_token: null,
      });
      expect(claimed.rows).toHaveLength(1);
      const cancelling = tracker.cancel(job.id);
      await waitFor(
        async () =>
          (
            await t.db.query<{ n: number }>(
              `SELECT count(*)::int AS n FROM pg_stat_activity
               WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%cancelled%'`,
            )
          ).rows[0]!.n > 0,
        { what: 'the cancel to wait for the claim' },
      );
      await claimer.query('COMMIT');
      expect(await cancelling).toMatchObject({ status: 'cancelled', attempts: 1 });
    } finally {
      await claimer.end();
    }
    // The attempt the claim handed out is closed as cancelled: exactly one row per attempt.
    expect(await executionRows(t.db, job.id)).toEqual([
      expect.objectContaining({ attempt: 1, outcome: 'cancelled' }),
    ]);
    expect(await tracker.markCompleted(job.id, 1)).toBe(false);
  });
});

describe('retry by an operator', () => {
  test('a failed job: pending now, fresh budget, backoff restarts at 2 minutes, attempts keep counting', async () => {
    const { tracker, clock } = kit;
    const { job } = await tracker.enqueue({ type: 'always-fails', payload: { reason: 'x' } });
    // Use up all 6 attempts.
    for (let attempt = 1; attempt <= 6; attempt++) {
      const [claimed] = await tracker.fetchReady(1);
      const failure = await tracker.markFailed(job.id, claimed!.attempts, `fail ${attempt}`);
      if (failure!.status === 'retrying') clock.set(failure!.scheduledAt);
    }
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'failed', attempts: 6 });
    clock.advanceMinutes(600);

    const retried = await tracker.retry(job.id);
    expect(retried).toMatchObject({
      status: 'pending',
      attempts: 6,
      maxAttempts: 12,
      scheduledAt: clock.now(),
      completedAt: null,
      startedAt: null,
    });
    await expect(tracker.retry(job.id)).rejects.toMatchObject({ code: 'invalid_state' });
    // Six fresh attempts, numbered 7..12, with the backoff from 2 minutes again.
    const delays: number[] = [];
    for (let attempt = 7; attempt <= 12; attempt++) {
      const [claimed] = await tracker.fetchReady(1);
      expect(claimed!.attempts).toBe(attempt);
      const failure = await tracker.markFailed(job.id, attempt, `again ${attempt}`);
      if (failure!.status === 'retrying') {
        delays.push(minutesBetween(clock.now(), failure!.scheduledAt));
        clock.set(failure!.scheduledAt);
      } else expect(attempt).toBe(12);
    }
    expect(delays).toEqual([2, 4, 8, 16, 32]);
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'failed', attempts: 12 });
    const executions = await executionRows(t.db, job.id);
    expect(executions.map((e) => e.attempt)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  });

  test('a cancelled job comes back too; its fresh budget is the type’s', async () => {
    const { tracker } = kit;
    const { job } = await tracker.enqueue({ type: 'short-retries', payload: {} });
    const [claimed] = await tracker.fetchReady(1);
    await tracker.cancel(job.id);
    const retried = await tracker.retry(job.id);
    expect(retried).toMatchObject({ status: 'pending', attempts: 1, maxAttempts: 4 });
    const [again] = await tracker.fetchReady(1);
    expect(again!.attempts).toBe(2);
    // The cancelled attempt's late report is still fenced out.
    expect(await tracker.markCompleted(job.id, claimed!.attempts)).toBe(false);
    expect(await tracker.markCompleted(job.id, 2)).toBe(true);
    expect((await executionRows(t.db, job.id)).map((e) => [e.attempt, e.outcome])).toEqual([
      [1, 'cancelled'],
      [2, 'completed'],
    ]);
  });

  test('only failed or cancelled jobs can be retried', async () => {
    const { tracker } = kit;
    const [pending, running, done] = await tracker.enqueueMany([
      { type: 'noop', payload: { n: 1 }, priority: 5 },
      { type: 'noop', payload: { n: 2 } },
      { type: 'noop', payload: { n: 3 } },
    ]);
    await tracker.fetchReady(2);
    await tracker.markCompleted(done!.job.id, 1);
    for (const id of [pending!.job.id, running!.job.id, done!.job.id]) {
      await expect(tracker.retry(id)).rejects.toMatchObject({ code: 'invalid_state' });
    }
    await expect(tracker.retry('00000000-0000-4000-8000-000000000000')).rejects.toMatchObject({
      code: 'job_not_found',
    });
  });

  test('a retry and a release wake listening workers at once (NOTIFY), without waiting for their poll', async () => {
    const { tracker } = kit;
    const [a, b] = await tracker.enqueueMany([
      { type: 'noop', payload: { n: 1 } },
      { type: 'noop', payload: { n: 2 } },
    ]);
    await tracker.fetchReady(2);
    await tracker.markFailed(a!.job.id, 1, 'broken', { permanent: true });
    let notifications = 0;
    const unlisten = await t.db.listen('lana_jobs', () => {
      notifications++;
    });
    try {
      await tracker.retry(a!.job.id);
      await waitFor(() => notifications === 1, { timeoutMs: 2000 });
      expect(await tracker.release([{ id: b!.job.id, attempt: 1 }])).toEqual([b!.job.id]);
      await waitFor(() => notifications === 2, { timeoutMs: 2000 });
      // Nothing released: no notification.
      expect(await tracker.release([{ id: b!.job.id, attempt: 1 }])).toEqual([]);
      await new Promise((r) => setTimeout(r, 100));
      expect(notifications).toBe(2);
    } finally {
      await unlisten();
    }
  });
});

describe('observing the queue', () => {
  test('queueState: due ready jobs and the age of the oldest; future and running jobs excluded', async () => {
    const { tracker, clock } = kit;
    expect(await tracker.queueState()).toEqual({ depth: 0, oldestReadyAgeSeconds: 0 });
    expect(await tracker.queueActivity()).toEqual({ enqueuedLastMinute: 0, runningPastTimeout: 0 });
    // A past run time is stored as now: jobs become old by being enqueued earlier.
    clock.set('2026-02-28T23:50:00Z');
    await tracker.enqueue({ type: 'noop', payload: { n: 1 } });
    clock.set('2026-02-28T23:59:30Z');
    await tracker.enqueue({ type: 'noop', payload: { n: 2 } });
    clock.set('2026-03-01T00:00:00Z');
    await tracker.enqueueMany([
      { type: 'noop', payload: { n: 3 }, runAt: new Date('2026-03-01T00:10:00Z') },
      { type: 'noop', payload: { n: 4 }, priority: -1 },
    ]);
    expect(await tracker.queueState()).toEqual({ depth: 3, oldestReadyAgeSeconds: 600 });
    // Every job created in the last minute counts as enqueued, scheduled ahead or not.
    expect(await tracker.queueActivity()).toEqual({ enqueuedLastMinute: 3, runningPastTimeout: 0 });
    await tracker.fetchReady(2); // n=4 (priority), then n=1 (oldest)
    expect(await tracker.queueState()).toEqual({ depth: 1, oldestReadyAgeSeconds: 30 });
    clock.advanceMinutes(10);
    expect(await tracker.queueState()).toEqual({ depth: 2, oldestReadyAgeSeconds: 630 });
    expect(await tracker.queueActivity()).toEqual({ enqueuedLastMinute: 0, runningPastTimeout: 0 });
    expect(await tracker.nextDueAt()).toEqual(new Date('2026-02-28T23:59:30Z'));
  });

  test('queueActivity: an attempt running past its type’s timeout counts before its lease expires', async () => {
    const { tracker, clock } = kit;
    await tracker.enqueue({ type: 'short-retries', payload: {} }); // timeout 5 s, lease 125 s
    await tracker.fetchReady(1, { startNow: true });
    clock.advance(5_000);
    expect((await tracker.queueActivity()).runningPastTimeout).toBe(0);
    clock.advance(1_000);
    expect((await tracker.queueActivity()).runningPastTimeout).toBe(1);
    expect((await tracker.stats()).overdueRunning).toBe(0); // its lease still holds
  });

  test('stats: counts by type and status, queue, overdue running, last hour’s outcomes', async () => {
    const { tracker, clock } = kit;
    // Enqueued a minute apart, so they are claimed in this order (a past run time is stored as now).
    clock.set('2026-02-28T23:50:00Z');
    await tracker.enqueue({ type: 'noop', payload: {} });
    clock.set('2026-02-28T23:51:00Z');
    await tracker.enqueue({ type: 'always-fails', payload: { reason: 'x' }, maxAttempts: 1 });
    clock.set('2026-02-28T23:52:00Z');
    await tracker.enqueue({ type: 'short-retries', payload: {} });
    clock.set('2026-03-01T00:00:00Z');
    const [a] = await tracker.fetchReady(1);
    await tracker.markCompleted(a!.id, 1, { durationMs: 40 });
    const [b] = await tracker.fetchReady(1);
    await tracker.markFailed(b!.id, 1, 'x', { durationMs: 20 });
    await tracker.fetchReady(1); // short-retries: stays running
    clock.set('2026-02-28T23:55:00Z');
    await tracker.enqueue({ type: 'noop', payload: {} });
    clock.set('2026-03-01T00:00:00Z');
    const stats = await tracker.stats();
    expect(stats.queue).toEqual({ depth: 1, oldestReadyAgeSeconds: 300 });
    expect(stats.counts).toEqual([
      { jobType: 'always-fails', status: 'failed', count: 1 },
      { jobType: 'noop', status: 'completed', count: 1 },
      { jobType: 'noop', status: 'pending', count: 1 },
      { jobType: 'short-retries', status: 'running', count: 1 },
    ]);
    expect(stats.overdueRunning).toBe(0);
    expect(stats.lastHour).toEqual(
      expect.arrayContaining([
        { jobType: 'noop', completed: 1, failed: 0, avgDurationMs: 40, maxDurationMs: 40, failureRate: 0 },
        {
          jobType: 'always-fails',
          completed: 0,
          failed: 1,
          avgDurationMs: 20,
          maxDurationMs: 20,
          failureRate: 1,
        },
      ]),
    );
    clock.advanceMinutes(3); // past the short-retries lease (125 s)
    expect((await tracker.stats()).overdueRunning).toBe(1);
    clock.advanceMinutes(120); // the last hour no longer holds those attempts
    expect((await tracker.stats()).lastHour).toEqual([]);
  });

  test("a type's page lists its running jobs beside the others, newest first, page by page", async () => {
    const { tracker } = kit;
    const queued = await tracker.enqueueMany(
      Array.from({ length: 5 }, (_, n) => ({ type: 'noop' as const, payload: { n } })),
    );
    await tracker.enqueueMany([{ type: 'always-fails', payload: { reason: 'other type' } }]);
    const ids = queued.map((r) => r.job.id);
    // The two oldest run, the third completes: running, completed and pending jobs of one type.
    const claimed = await tracker.fetchReady(3, { startNow: true, jobType: 'noop' });
    expect(claimed.map((j) => j.id)).toEqual(ids.slice(0, 3));
    await tracker.completeMany([{ id: ids[2]!, attempt: 1 }]);
    const first = await tracker.listJobsPage({ jobType: 'noop' }, { limit: 3 });
    expect(first.jobs.map((j) => j.id)).toEqual([ids[4], ids[3], ids[2]]);
    const second = await tracker.listJobsPage({ jobType: 'noop' }, { limit: 3, before: first.nextBefore! });
    expect(second.jobs.map((j) => [j.id, j.status])).toEqual([
      [ids[1], 'running'],
      [ids[0], 'running'],
    ]);
    expect(second.nextBefore).toBeNull();
  });

  test('listJobs filters by status and type; getExecutions includes the attempt in progress', async () => {
    const { tracker, clock } = kit;
    // Jobs due at the same instant are claimed in id order, which is random within a millisecond: make
    // `b` due later so `a` is the one claimed.
    const [a, b] = await tracker.enqueueMany([
      { type: 'noop', payload: { n: 1 } },
      { type: 'always-fails', payload: { reason: 'x' }, runAt: new Date(clock.now().getTime() + 1000) },
    ]);
    await tracker.fetchReady(1, { startNow: true });
    expect((await tracker.listJobs({ status: 'running' })).map((j) => j.id)).toEqual([a!.job.id]);
    expect((await tracker.listJobs({ jobType: 'always-fails' })).map((j) => j.id)).toEqual([b!.job.id]);
    await expect(tracker.listJobs({ jobType: 'nope' })).rejects.toMatchObject({ code: 'unknown_job_type' });
    expect(await tracker.getExecutions(a!.job.id)).toEqual([
      {
        jobId: a!.job.id,
        attempt: 1,
        claimedAt: clock.now(),
        startedAt: clock.now(),
        finishedAt: null,
        outcome: null,
        error: null,
        durationMs: null,
      },
    ]);
  });

  test('prune deletes old finished jobs with their executions, only the statuses asked for', async () => {
    const { tracker, clock } = kit;
    const [done, failed, waiting] = await tracker.enqueueMany([
      { type: 'noop', payload: {} },
      { type: 'always-fails', payload: { reason: 'x' }, maxAttempts: 1 },
      { type: 'noop', payload: {}, runAt: new Date('2026-03-05T00:00:00Z') },
    ]);
    await tracker.fetchReady(2);
    await tracker.markCompleted(done!.job.id, 1);
    await tracker.markFailed(failed!.job.id, 1, 'x');
    expect(await tracker.pruneFinished({ before: clock.now(), statuses: ['completed'] })).toBe(0);
    clock.advanceMinutes(60 * 24 * 31);
    const cutoff = new Date(clock.now().getTime() - 30 * 86_400_000);
    expect(await tracker.pruneFinished({ before: cutoff, statuses: ['completed'] })).toBe(1);
    expect(await tracker.getJob(done!.job.id)).toBeNull();
    expect(await executionRows(t.db, done!.job.id)).toEqual([]);
    expect((await tracker.getJob(failed!.job.id))!.status).toBe('failed');
    expect((await tracker.getJob(waiting!.job.id))!.status).toBe('pending');
    await expect(
      tracker.pruneFinished({ before: cutoff, statuses: ['pending' as 'completed'] }),
    ).rejects.toMatchObject({ code: 'invalid_option' });
  });
});
