import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { Worker } from '../../shared/runtime/worker.js';
import {
  latestTick,
  nextTick,
  type ScheduleExpression,
  toEventBridgeExpression,
} from '../../shared/schedules/cron.js';
import {
  jobForTick,
  type RecurringSchedule,
  schedules,
  tickKey,
} from '../../shared/schedules/definitions.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { createCoreRegistry, waitFor } from '../support/lifecycle.js';

const midnight: ScheduleExpression = { kind: 'cron', minute: '0', hour: '0' };

describe('cron expressions', () => {
  test('midnight UTC renders for EventBridge as cron(0 0 * * ? *)', () => {
    expect(toEventBridgeExpression(midnight)).toBe('cron(0 0 * * ? *)');
    const accrual = schedules.find((s) => s.name === 'interest-accrual-daily')!;
    expect(toEventBridgeExpression(accrual.expression)).toBe('cron(0 0 * * ? *)');
  });

  test('other expressions', () => {
    expect(toEventBridgeExpression({ kind: 'rate', minutes: 1 })).toBe('rate(1 minute)');
    expect(toEventBridgeExpression({ kind: 'rate', minutes: 5 })).toBe('rate(5 minutes)');
    expect(toEventBridgeExpression({ kind: 'cron', minute: '30', hour: '9', dayOfWeek: '2-6' })).toBe(
      'cron(30 9 ? * 2-6 *)',
    );
    expect(toEventBridgeExpression({ kind: 'cron', minute: '0', hour: '6', dayOfMonth: '1' })).toBe(
      'cron(0 6 1 * ? *)',
    );
    expect(toEventBridgeExpression({ kind: 'cron', minute: '17', hour: '*' })).toBe('cron(17 * * * ? *)');
  });

  test('latestTick: the tick at or before a time, to the minute', () => {
    expect(latestTick(midnight, new Date('2026-05-10T13:45:10Z'))).toEqual(new Date('2026-05-10T00:00:00Z'));
    expect(latestTick(midnight, new Date('2026-05-10T00:00:00Z'))).toEqual(new Date('2026-05-10T00:00:00Z'));
    expect(latestTick(midnight, new Date('2026-05-10T00:00:59.999Z'))).toEqual(
      new Date('2026-05-10T00:00:00Z'),
    );
    expect(latestTick(midnight, new Date('2026-05-09T23:59:59.999Z'))).toEqual(
      new Date('2026-05-09T00:00:00Z'),
    );
    // Month and year boundaries.
    expect(latestTick(midnight, new Date('2026-01-01T00:30:00Z'))).toEqual(new Date('2026-01-01T00:00:00Z'));
    expect(latestTick({ kind: 'rate', minutes: 5 }, new Date('2026-05-10T13:47:10Z'))).toEqual(
      new Date('2026-05-10T13:45:00Z'),
    );
    // EventBridge day-of-week: 1 = Sunday. 2026-05-10 is a Sunday; the last weekday 09:30 was Friday.
    const weekdays: ScheduleExpression = { kind: 'cron', minute: '30', hour: '9', dayOfWeek: '2-6' };
    expect(latestTick(weekdays, new Date('2026-05-10T12:00:00Z'))).toEqual(new Date('2026-05-08T09:30:00Z'));
    const every15: ScheduleExpression = { kind: 'cron', minute: '*/15', hour: '*' };
    expect(latestTick(every15, new Date('2026-05-10T12:44:00Z'))).toEqual(new Date('2026-05-10T12:30:00Z'));
  });

  test('nextTick: the first tick strictly after a time', () => {
    expect(nextTick(midnight, new Date('2026-05-10T13:45:10Z'))).toEqual(new Date('2026-05-11T00:00:00Z'));
    expect(nextTick(midnight, new Date('2026-05-10T00:00:00Z'))).toEqual(new Date('2026-05-11T00:00:00Z'));
    expect(nextTick(midnight, new Date('2026-12-31T23:59:00Z'))).toEqual(new Date('2027-01-01T00:00:00Z'));
    expect(nextTick({ kind: 'rate', minutes: 5 }, new Date('2026-05-10T13:45:00Z'))).toEqual(
      new Date('2026-05-10T13:50:00Z'),
    );
    const weekdays: ScheduleExpression = { kind: 'cron', minute: '30', hour: '9', dayOfWeek: '2-6' };
    expect(nextTick(weekdays, new Date('2026-05-08T10:00:00Z'))).toEqual(new Date('2026-05-11T09:30:00Z'));
  });

  test('invalid fields are refused', () => {
    expect(() => latestTick({ kind: 'cron', minute: '61', hour: '0' }, new Date())).toThrow(
      /invalid cron field/,
    );
    expect(() => nextTick({ kind: 'cron', minute: '0', hour: '24' }, new Date())).toThrow(
      /invalid cron field/,
    );
    expect(() => latestTick({ kind: 'cron', minute: '0/0', hour: '0' }, new Date())).toThrow(
      /invalid cron field/,
    );
  });

  test('a tick’s job and idempotency key: the same minute gives the same key', () => {
    const accrual = schedules.find((s) => s.name === 'interest-accrual-daily')!;
    // The midnight tick accrues the day that just ended.
    expect(jobForTick(accrual, new Date('2026-05-10T00:00:41Z'))).toEqual({
      type: 'interest-accrual',
      payload: { date: '2026-05-09' },
      idempotencyKey: 'schedule:interest-accrual-daily@2026-05-10T00:00:00.000Z',
    });
    expect(tickKey(accrual, new Date('2026-05-10T00:00:59.999Z'))).toBe(
      tickKey(accrual, new Date('2026-05-10T00:00:00Z')),
    );
    expect(tickKey(accrual, new Date('2026-05-11T00:00:00Z'))).not.toBe(
      tickKey(accrual, new Date('2026-05-10T00:00:00Z')),
    );
  });
});

describe('the worker fires schedules', () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(async () => t.drop());
  beforeEach(async () => {
    await t.db.query('TRUNCATE jobs, job_execution_records');
  });

  const schedule: RecurringSchedule = {
    name: 'test-midnight',
    description: 'test',
    expression: midnight,
    job: (tick) => ({ type: 'noop', payload: { n: tick.getUTCDate() } }),
  };

  function worker(clock: ManualClock, options: { scheduleIntervalMs?: number } = {}) {
    const registry = createCoreRegistry();
    const tracker = new JobTracker({ db: t.db, registry, clock });
    const w = new Worker({
      tracker,
      dispatcher: new JobDispatcher(registry, { runs: [] }),
      schedules: [schedule],
      pollIntervalMs: 60_000,
      ...options,
    });
    return { tracker, worker: w };
  }

  const keys = async () =>
    (await t.db.query<{ k: string }>('SELECT idempotency_key AS k FROM jobs ORDER BY k')).rows.map(
      (r) => r.k,
    );

  test('a duplicate or late tick enqueues once (the key is schedule + tick time)', async () => {
    const clock = new ManualClock('2026-05-10T00:00:30Z');
    const a = worker(clock);
    const b = worker(clock);
    await a.worker.fireSchedules();
    await a.worker.fireSchedules(); // the same worker, twice
    await b.worker.fireSchedules(); // a second process, same tick
    await Promise.all([worker(clock).worker.fireSchedules(), worker(clock).worker.fireSchedules()]); // at once
    clock.advanceMinutes(90); // late: the latest tick is still midnight
    await b.worker.fireSchedules();
    expect(await keys()).toEqual(['schedule:test-midnight@2026-05-10T00:00:00.000Z']);
    const [job] = await a.tracker.listJobs();
    expect(job).toMatchObject({ jobType: 'noop', payload: { n: 10 }, status: 'pending' });
    // The next midnight is a new tick.
    clock.set('2026-05-11T00:00:05Z');
    await a.worker.fireSchedules();
    await b.worker.fireSchedules();
    expect(await keys()).toEqual([
      'schedule:test-midnight@2026-05-10T00:00:00.000Z',
      'schedule:test-midnight@2026-05-11T00:00:00.000Z',
    ]);
  });

  test('a running worker fires due ticks on start and on its schedule timer', async () => {
    const clock = new ManualClock('2026-05-10T00:00:30Z');
    const a = worker(clock, { scheduleIntervalMs: 20 });
    const b = worker(clock, { scheduleIntervalMs: 20 });
    await a.worker.start();
    await b.worker.start();
    try {
      await waitFor(async () => (await keys()).length === 1, { what: 'the midnight tick' });
      clock.set('2026-05-11T00:00:10Z');
      await waitFor(async () => (await keys()).length === 2, { what: 'the next midnight tick' });
      // Both workers keep checking; each tick is still one job.
      const fired = await keys();
      await new Promise((r) => setTimeout(r, 100));
      expect(await keys()).toEqual(fired);
      expect(fired).toEqual([
        'schedule:test-midnight@2026-05-10T00:00:00.000Z',
        'schedule:test-midnight@2026-05-11T00:00:00.000Z',
      ]);
    } finally {
      await a.worker.stop();
      await b.worker.stop();
    }
  });
});
