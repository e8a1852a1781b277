import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { z } from 'zod';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { JobTypeRegistry } from '../../shared/jobs/registry.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { type AttemptEvent, Worker, type WorkerOptions } from '../../shared/runtime/worker.js';
import { latestTick, nextTick, toEventBridgeExpression } from '../../shared/schedules/cron.js';
import {
  jobForTick,
  type RecurringSchedule,
  schedules,
  tickKey,
} from '../../shared/schedules/definitions.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_executions');
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Job types whose executors take as long as their payload says. */
function registry(started: string[] = []) {
  return new JobTypeRegistry()
    .register({
      type: 'sleepy',
      description: 'sleeps ms, honouring its abort signal',
      schema: z.object({ ms: z.number().int() }),
      timeoutSeconds: 30,
      execute: async ({ ms }, ctx) => {
        started.push(ctx.job.id);
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(resolve, ms);
          ctx.signal.addEventListener('abort', () => {
            clearTimeout(timer);
            reject(ctx.signal.reason);
          });
        });
        return undefined;
      },
    })
    .register({
      type: 'flaky',
      description: 'fails',
      schema: z.object({}),
      execute: async () => {
        throw new Error('flaky failure');
      },
    });
}

type Reg = ReturnType<typeof registry>;
function worker(
  reg: Reg,
  options: Omit<WorkerOptions<Reg['schemas'], unknown>, 'tracker' | 'dispatcher'> = {},
  clock?: ManualClock,
) {
  const tracker = new JobTracker({ db: t.db, registry: reg, clock });
  const w = new Worker({ tracker, dispatcher: new JobDispatcher(reg, {} as unknown), ...options });
  return { tracker, worker: w };
}

const statusCounts = async () =>
  Object.fromEntries(
    (
      await t.db.query<{ status: string; n: number }>(
        'SELECT status, count(*)::int AS n FROM jobs GROUP BY status',
      )
    ).rows.map((r) => [r.status, r.n]),
  );

describe('worker', () => {
  test('drains a backlog with batched claims and completions, one execution row per job', async () => {
    const reg = registry();
    const { tracker, worker: w } = worker(reg, { concurrency: 4, claimBatchSize: 25 });
    await tracker.enqueueMany(
      Array.from({ length: 300 }, () => ({ type: 'sleepy' as const, payload: { ms: 0 } })),
    );
    await w.start();
    await w.idle();
    await w.stop();
    expect(await statusCounts()).toEqual({ completed: 300 });
    const ex = await t.db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM job_executions WHERE outcome = 'completed'",
    );
    expect(ex.rows[0]!.n).toBe(300);
  });

  test('an idle worker is woken by LISTEN/NOTIFY long before its poll interval', async () => {
    const started: string[] = [];
    const reg = registry(started);
    const { tracker, worker: w } = worker(reg, {
      pollIntervalMs: 60_000,
      listen: (onNotify) => t.db.listen('lana_jobs', onNotify),
    });
    await w.start();
    await sleep(100);
    const { job } = await tracker.enqueue({ type: 'sleepy', payload: { ms: 0 } });
    for (let i = 0; i < 100 && !started.includes(job.id); i++) await sleep(20);
    expect(started).toContain(job.id);
    await w.stop();
  });

  test('without LISTEN, the poll picks new jobs up', async () => {
    const started: string[] = [];
    const reg = registry(started);
    const { tracker, worker: w } = worker(reg, { pollIntervalMs: 100 });
    await w.start();
    const { job } = await tracker.enqueue({ type: 'sleepy', payload: { ms: 0 } });
    for (let i = 0; i < 100 && !started.includes(job.id); i++) await sleep(20);
    expect(started).toContain(job.id);
    await w.stop();
  });

  test('a failed attempt is recorded as retrying with its next run time', async () => {
    const events: AttemptEvent[] = [];
    const { tracker, worker: w } = worker(registry(), { onAttemptRecorded: (e) => events.push(e) });
    await tracker.enqueue({ type: 'flaky', payload: {} });
    await w.start();
    await w.idle();
    await w.stop();
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ status: 'retrying' });
    const delayMinutes = (events[0]!.nextRunAt!.getTime() - Date.now()) / 60_000;
    expect(delayMinutes).toBeGreaterThan(1.9);
    expect(delayMinutes).toBeLessThanOrEqual(2);
  });

  test('the worker rescues expired leases and runs the job again', async () => {
    const clock = new ManualClock(new Date());
    const started: string[] = [];
    const reg = registry(started);
    const { tracker, worker: w } = worker(reg, { rescueIntervalMs: 50 }, clock);
    const { job } = await tracker.enqueue({ type: 'sleepy', payload: { ms: 0 } });
    await tracker.fetchReady(1); // a claimer that then died
    clock.advanceMinutes(8); // past the 330 s lease
    await w.start();
    clock.advanceMinutes(3); // past the 2-minute backoff
    for (let i = 0; i < 100 && !started.includes(job.id); i++) await sleep(20);
    await w.idle();
    await w.stop();
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'completed', attempts: 2 });
    expect((await tracker.getExecutions(job.id)).map((e) => e.outcome)).toEqual([
      'lease_expired',
      'completed',
    ]);
  });

  test('graceful stop: running jobs finish within grace, queued ones are released, nothing stays running', async () => {
    const started: string[] = [];
    const reg = registry(started);
    const { tracker, worker: w } = worker(reg, { concurrency: 2, claimBatchSize: 10, shutdownGraceMs: 2000 });
    await tracker.enqueueMany(
      Array.from({ length: 6 }, () => ({ type: 'sleepy' as const, payload: { ms: 300 } })),
    );
    await w.start();
    while (started.length < 2) await sleep(10);
    await w.stop();
    expect(await statusCounts()).toEqual({ completed: 2, pending: 4 });
    const released = await t.db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM job_executions WHERE outcome = 'released'",
    );
    expect(released.rows[0]!.n).toBe(4);
    const rerun = await t.db.query<{ max_attempts: number }>(
      "SELECT DISTINCT max_attempts FROM jobs WHERE status = 'pending'",
    );
    expect(rerun.rows).toEqual([{ max_attempts: 7 }]); // the released attempt does not count
  });

  test('graceful stop: a job still running after the grace period is interrupted and due again at once', async () => {
    const started: string[] = [];
    const reg = registry(started);
    const { tracker, worker: w } = worker(reg, { shutdownGraceMs: 200 });
    const { job } = await tracker.enqueue({ type: 'sleepy', payload: { ms: 20_000 } });
    await w.start();
    while (started.length < 1) await sleep(10);
    const stoppedAt = Date.now();
    await w.stop();
    expect(Date.now() - stoppedAt).toBeLessThan(5000);
    const row = await tracker.getJob(job.id);
    expect(row).toMatchObject({ status: 'retrying', attempts: 1 });
    expect(row!.lastError).toMatch(/interrupted/);
    expect(row!.scheduledAt.getTime()).toBeLessThanOrEqual(Date.now());
    expect(await statusCounts()).toEqual({ retrying: 1 });
  });

  test('a schedule tick enqueues once, however often it fires', async () => {
    const clock = new ManualClock('2026-05-10T00:00:30Z');
    const schedule: RecurringSchedule = {
      name: 'test-midnight',
      description: 'test',
      expression: { kind: 'cron', minute: '0', hour: '0' },
      job: () => ({ type: 'sleepy', payload: { ms: 0 } }),
    };
    const reg = registry();
    const a = worker(reg, { schedules: [schedule] }, clock);
    const b = worker(reg, { schedules: [schedule] }, clock);
    await a.worker.fireSchedules();
    await a.worker.fireSchedules();
    await b.worker.fireSchedules(); // a second process, same tick
    clock.advanceMinutes(90); // late: still the same (latest) tick
    await b.worker.fireSchedules();
    const rows = await t.db.query<{ idempotency_key: string }>('SELECT idempotency_key FROM jobs');
    expect(rows.rows).toEqual([{ idempotency_key: 'schedule:test-midnight@2026-05-10T00:00:00.000Z' }]);
  });
});

describe('schedules', () => {
  test('the midnight cron renders for EventBridge and ticks at midnight UTC', () => {
    const midnight = schedules.find((s) => s.name === 'interest-accrual-daily')!;
    expect(toEventBridgeExpression(midnight.expression)).toBe('cron(0 0 * * ? *)');
    expect(latestTick(midnight.expression, new Date('2026-05-10T13:45:10Z'))).toEqual(
      new Date('2026-05-10T00:00:00Z'),
    );
    expect(nextTick(midnight.expression, new Date('2026-05-10T13:45:10Z'))).toEqual(
      new Date('2026-05-11T00:00:00Z'),
    );
    // The midnight tick accrues the day that just ended.
    expect(jobForTick(midnight, new Date('2026-05-10T00:00:41Z'))).toEqual({
      type: 'interest-accrual',
      payload: { date: '2026-05-09' },
      idempotencyKey: 'schedule:interest-accrual-daily@2026-05-10T00:00:00.000Z',
    });
    expect(tickKey(midnight, new Date('2026-05-10T00:00:59.999Z'))).toBe(
      tickKey(midnight, new Date('2026-05-10T00:00:00Z')),
    );
  });

  test('rate and cron expressions', () => {
    expect(toEventBridgeExpression({ kind: 'rate', minutes: 1 })).toBe('rate(1 minute)');
    expect(toEventBridgeExpression({ kind: 'rate', minutes: 5 })).toBe('rate(5 minutes)');
    expect(toEventBridgeExpression({ kind: 'cron', minute: '30', hour: '9', dayOfWeek: '2-6' })).toBe(
      'cron(30 9 ? * 2-6 *)',
    );
    expect(latestTick({ kind: 'rate', minutes: 5 }, new Date('2026-05-10T13:47:10Z'))).toEqual(
      new Date('2026-05-10T13:45:00Z'),
    );
    // EventBridge day-of-week: 1 = Sunday. 2026-05-10 is a Sunday.
    const weekdays = { kind: 'cron' as const, minute: '30', hour: '9', dayOfWeek: '2-6' };
    expect(latestTick(weekdays, new Date('2026-05-10T12:00:00Z'))).toEqual(new Date('2026-05-08T09:30:00Z'));
    expect(() => latestTick({ kind: 'cron', minute: '61', hour: '0' }, new Date())).toThrow(
      /invalid cron field/,
    );
  });
});
