import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { recordResult } from '../../shared/jobs/record-result.js';
import { backoffSeconds, DEFAULT_RETRY, retrySchedule } from '../../shared/jobs/retry-policy.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { coreKit, executionRows, minutesBetween } from '../support/lifecycle.js';

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

/**
 * Claims the job, runs its executor through the dispatcher and records the result (the real tracker
 * and SQL), until it stops coming back; returns the delay before each retry, in seconds.
 */
async function walk(jobId: string): Promise<number[]> {
  const { tracker, dispatcher, clock } = kit;
  const delays: number[] = [];
  for (;;) {
    const claimed = await tracker.fetchReady(10);
    expect(claimed.map((j) => j.id)).toEqual([jobId]);
    const job = claimed[0]!;
    const recorded = await recordResult(tracker, job, await dispatcher.dispatch(job));
    if (recorded.recorded !== 'retrying') {
      expect(recorded.recorded).toBe('failed');
      return delays;
    }
    const row = await tracker.getJob(jobId);
    expect(row).toMatchObject({ status: 'retrying', attempts: job.attempts });
    expect(row!.scheduledAt).toEqual(recorded.failure.scheduledAt);
    delays.push((row!.scheduledAt.getTime() - clock.now().getTime()) / 1000);
    // Not claimable a moment before it is due; claimable exactly when due.
    clock.set(new Date(row!.scheduledAt.getTime() - 1));
    expect(await tracker.fetchReady(10)).toEqual([]);
    clock.set(row!.scheduledAt);
  }
}

describe('the retry rule, through the real tracker', () => {
  test('default: 6 attempts, retried after 2, 4, 8, 16, 32 minutes, then failed', async () => {
    const { tracker, services, clock } = kit;
    const { job } = await tracker.enqueue({ type: 'always-fails', payload: { reason: 'boom' } });
    expect(job.maxAttempts).toBe(DEFAULT_RETRY.maxAttempts);
    const delays = await walk(job.id);
    expect(delays.map((s) => s / 60)).toEqual([2, 4, 8, 16, 32]);
    // The policy module's formula (used for display) agrees with the database's.
    expect(delays).toEqual(retrySchedule());
    const final = await tracker.getJob(job.id);
    expect(final).toMatchObject({
      status: 'failed',
      attempts: 6,
      lastError: 'boom',
      completedAt: clock.now(),
    });
    // The whole walk took 62 minutes of (manual) time.
    expect(minutesBetween(job.scheduledAt, clock.now())).toBe(62);
    expect(services.runs.map((r) => r.attempt)).toEqual([1, 2, 3, 4, 5, 6]);
    const executions = await executionRows(t.db, job.id);
    expect(executions.map((e) => [e.attempt, e.outcome, e.error])).toEqual(
      [1, 2, 3, 4, 5, 6].map((a) => [a, 'failed', 'boom']),
    );
    // A failed job is never claimed again.
    clock.advanceMinutes(24 * 60);
    expect(await tracker.fetchReady(10)).toEqual([]);
  });

  test('the 32-minute cap holds for a job allowed more attempts', async () => {
    const { tracker } = kit;
    const { job } = await tracker.enqueue({ type: 'always-fails', payload: { reason: 'x' }, maxAttempts: 9 });
    const delays = await walk(job.id);
    expect(delays.map((s) => s / 60)).toEqual([2, 4, 8, 16, 32, 32, 32, 32]);
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'failed', attempts: 9 });
  });

  test('a job type overrides max attempts and the cap', async () => {
    const { tracker, registry } = kit;
    const { job } = await tracker.enqueue({ type: 'short-retries', payload: {} });
    expect(job.maxAttempts).toBe(3);
    const delays = await walk(job.id);
    const settings = registry.require('short-retries').retry;
    expect(delays).toEqual([15, 15]); // min(10 * 2^n, 15)
    expect(delays).toEqual(retrySchedule(settings));
    expect(backoffSeconds(1, settings)).toBe(15);
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'failed', attempts: 3, lastError: 'nope' });
  });

  test('a single job overrides max attempts at enqueue', async () => {
    const { tracker } = kit;
    const { job } = await tracker.enqueue({ type: 'always-fails', payload: { reason: 'x' }, maxAttempts: 2 });
    expect((await walk(job.id)).map((s) => s / 60)).toEqual([2]);
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'failed', attempts: 2 });
    const once = await tracker.enqueue({ type: 'always-fails', payload: { reason: 'y' }, maxAttempts: 1 });
    expect(await walk(once.job.id)).toEqual([]);
  });

  test('markFailed reports what became of the attempt', async () => {
    const { tracker, clock } = kit;
    const { job } = await tracker.enqueue({ type: 'noop', payload: {}, maxAttempts: 2 });
    await tracker.fetchReady(1);
    expect(await tracker.markFailed(job.id, 1, 'first')).toEqual({
      id: job.id,
      jobType: 'noop',
      attempt: 1,
      status: 'retrying',
      scheduledAt: new Date(clock.now().getTime() + 2 * 60_000),
    });
    clock.advanceMinutes(2);
    await tracker.fetchReady(1);
    expect(await tracker.markFailed(job.id, 2, 'second')).toMatchObject({ attempt: 2, status: 'failed' });
    expect((await tracker.getJob(job.id))!.lastError).toBe('second');
  });
});

describe('failures retrying cannot fix', () => {
  test('an executor throwing PermanentJobError fails the job at once', async () => {
    const { tracker, dispatcher, services } = kit;
    const { job } = await tracker.enqueue({ type: 'permanent-fails', payload: {} });
    const [claimed] = await tracker.fetchReady(1);
    const recorded = await recordResult(tracker, claimed!, await dispatcher.dispatch(claimed!));
    expect(recorded.recorded).toBe('failed');
    expect(await tracker.getJob(job.id)).toMatchObject({
      status: 'failed',
      attempts: 1,
      lastError: 'the facility no longer exists',
    });
    expect(services.runs).toHaveLength(1);
  });

  test('a row written by hand with an unknown type or a bad payload fails at dispatch, with the reason', async () => {
    const { tracker, dispatcher, services } = kit;
    await t.db.query(
      `INSERT INTO jobs (job_type, payload, scheduled_at)
       VALUES ('retired-type', '{}', '2026-03-01Z'), ('always-fails', '{"reason": 7}', '2026-03-01Z'),
              ('noop', '{"n": "seven"}', '2026-03-01Z')`,
    );
    const claimed = await tracker.fetchReady(10);
    expect(claimed).toHaveLength(3);
    for (const job of claimed) {
      const recorded = await recordResult(tracker, job, await dispatcher.dispatch(job));
      expect(recorded.recorded).toBe('failed');
    }
    const rows = await tracker.listJobs();
    const byType = Object.fromEntries(rows.map((r) => [r.jobType, r]));
    expect(byType['retired-type']).toMatchObject({ status: 'failed', attempts: 1, maxAttempts: 6 });
    expect(byType['retired-type']!.lastError).toBe('unknown job type "retired-type"');
    expect(byType['always-fails']).toMatchObject({ status: 'failed', attempts: 1 });
    expect(byType['always-fails']!.lastError).toMatch(/invalid payload for always-fails: payload\.reason/);
    expect(byType.noop).toMatchObject({ status: 'failed', attempts: 1 });
    expect(byType.noop!.lastError).toMatch(/payload\.n/);
    expect(services.runs).toEqual([]); // no executor ran
    const executions = await executionRows(t.db);
    expect(executions.map((e) => [e.attempt, e.outcome])).toEqual([
      [1, 'failed'],
      [1, 'failed'],
      [1, 'failed'],
    ]);
  });
});

describe('an executor asks to run again later', () => {
  test('retrying at the time it asked for, recorded as retry_requested', async () => {
    const { tracker, dispatcher, clock } = kit;
    const at = '2026-03-01T06:00:00.000Z';
    const { job } = await tracker.enqueue({ type: 'retry-later', payload: { at } });
    const [claimed] = await tracker.fetchReady(1);
    const recorded = await recordResult(tracker, claimed!, await dispatcher.dispatch(claimed!));
    expect(recorded).toMatchObject({ recorded: 'retrying', failure: { scheduledAt: new Date(at) } });
    expect(await tracker.getJob(job.id)).toMatchObject({
      status: 'retrying',
      scheduledAt: new Date(at),
      lastError: 'the ledger is closed until then',
    });
    const [execution] = await executionRows(t.db, job.id);
    expect(execution).toMatchObject({ attempt: 1, outcome: 'retry_requested' });
    clock.set(new Date(new Date(at).getTime() - 1));
    expect(await tracker.fetchReady(1)).toEqual([]);
    clock.set(at);
    expect((await tracker.fetchReady(1)).map((j) => [j.id, j.attempts])).toEqual([[job.id, 2]]);
  });

  test('markFailed with retryAt replaces the backoff', async () => {
    const { tracker } = kit;
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    const [claimed] = await tracker.fetchReady(1);
    const at = new Date('2026-03-01T00:00:30Z');
    const failure = await tracker.markFailed(claimed!.id, 1, 'waiting for the ledger', { retryAt: at });
    expect(failure).toMatchObject({ status: 'retrying', scheduledAt: at });
    expect((await executionRows(t.db, job.id))[0]!.outcome).toBe('retry_requested');
  });

  test('a requested retry does not count: not failed on the last attempt, backoff not grown', async () => {
    const { tracker, clock } = kit;
    const { job } = await tracker.enqueue({ type: 'noop', payload: {}, maxAttempts: 2 });
    for (let i = 1; i <= 3; i++) {
      const [claimed] = await tracker.fetchReady(1);
      const at = new Date(clock.now().getTime() + 60_000);
      expect(
        await tracker.markFailed(claimed!.id, claimed!.attempts, 'later', { retryAt: at }),
      ).toMatchObject({
        status: 'retrying',
        scheduledAt: at,
      });
      clock.set(at);
    }
    expect(await tracker.getJob(job.id)).toMatchObject({ attempts: 3, maxAttempts: 5 });
    // A real failure now backs off 2 minutes, as after a first failure, and the job still has one more try.
    const [claimed] = await tracker.fetchReady(1);
    const failure = await tracker.markFailed(claimed!.id, claimed!.attempts, 'boom');
    expect(failure).toMatchObject({ status: 'retrying' });
    expect(failure!.scheduledAt.getTime() - clock.now().getTime()).toBe(2 * 60_000);
  });
});
