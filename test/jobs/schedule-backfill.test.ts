import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import type { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import type { Database } from '../../shared/db/port.js';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { silentLogger } from '../../shared/runtime/logger.js';
import { ScheduleFirer } from '../../shared/runtime/schedule-firer.js';
import { ticksBetween } from '../../shared/schedules/cron.js';
import {
  defineSchedules,
  type RecurringSchedule,
  ScheduleDefinitionError,
  schedules,
  ticksToFire,
} from '../../shared/schedules/definitions.js';
import { type DataApiFixture, dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { createCoreRegistry } from '../support/lifecycle.js';

/** Schedule backfill: after downtime, each missed tick within the window is enqueued once, oldest first. */

const daily: RecurringSchedule = {
  name: 'test-daily',
  description: 'test',
  expression: { kind: 'cron', minute: '0', hour: '8' },
  job: (tick) => ({ type: 'noop', payload: { n: tick.getUTCDate() } }),
  backfill: '3d',
};

describe('definitions', () => {
  test.each([
    ['6x', /schedule bad: backfill "6x" is not a window from 1m to 7d \(write e\.g\. 90m, 6h, 3d\)/],
    ['0m', /backfill "0m" is not a window from 1m to 7d/],
    ['8d', /backfill "8d" is not a window from 1m to 7d/],
    [' 6h', /backfill " 6h" is not a window/],
    [6, /backfill 6 is not a window/],
  ])('a bad window (%j) is refused when the list is built', (backfill, message) => {
    const bad = { ...daily, name: 'bad', backfill: backfill as string };
    expect(() => defineSchedules([bad])).toThrow(ScheduleDefinitionError);
    expect(() => defineSchedules([bad])).toThrow(message);
  });

  test('a rate schedule cannot backfill (its EventBridge ticks are not on the clock); names are unique', () => {
    const rate = { ...daily, expression: { kind: 'rate', minutes: 5 } as const };
    expect(() => defineSchedules([rate])).toThrow(/schedule test-daily: backfill needs a cron expression/);
    expect(() => defineSchedules([daily, daily])).toThrow(/schedule test-daily is defined twice/);
  });

  test('the shipped schedules: only the payment reminders backfill, three days', () => {
    expect(schedules.filter((s) => s.backfill !== undefined).map((s) => [s.name, s.backfill])).toEqual([
      ['payment-reminders-daily', '3d'],
    ]);
  });

  test('ticks to fire: the window oldest first, and the latest tick even when older than the window', () => {
    const now = new Date('2026-05-10T10:00:00Z');
    expect(ticksToFire(daily, now).map((d) => d.toISOString())).toEqual([
      '2026-05-08T08:00:00.000Z',
      '2026-05-09T08:00:00.000Z',
      '2026-05-10T08:00:00.000Z',
    ]);
    const { backfill: _, ...plain } = daily;
    expect(ticksToFire(plain, now).map((d) => d.toISOString())).toEqual(['2026-05-10T08:00:00.000Z']);
    const short = { ...daily, backfill: '1h' };
    expect(ticksToFire(short, now).map((d) => d.toISOString())).toEqual(['2026-05-10T08:00:00.000Z']);
    // At most `max` ticks, the newest.
    const everyMinute = { kind: 'cron', minute: '*', hour: '*' } as const;
    expect(ticksBetween(everyMinute, new Date('2026-05-10T00:00:00Z'), now, 3)).toEqual([
      new Date('2026-05-10T09:58:00Z'),
      new Date('2026-05-10T09:59:00Z'),
      new Date('2026-05-10T10:00:00Z'),
    ]);
  });
});

let t: TestDatabase;
let fixture: DataApiFixture;
let dataApi: DataApiDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
  fixture = await startDataApiFixture(t.url);
  dataApi = dataApiDriverOver(fixture, t.name);
});
afterAll(async () => {
  await dataApi?.close();
  await fixture?.close();
  await t?.drop();
});
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_execution_records, schedule_ticks');
});

const keys = async () =>
  (await t.db.query<{ k: string }>('SELECT idempotency_key AS k FROM jobs ORDER BY id')).rows.map((r) => r.k);
const tickRows = async () =>
  (await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM schedule_ticks')).rows[0]!.n;

describe.each([
  ['node-postgres', () => t.db as Database],
  ['Data API', () => dataApi as Database],
])('backfill (%s)', (_name, db) => {
  const firer = (clock: ManualClock, list: readonly RecurringSchedule[] = [daily]) => {
    const tracker = new JobTracker({ db: db(), registry: createCoreRegistry(), clock });
    return {
      tracker,
      firer: new ScheduleFirer({ tracker, schedules: list, intervalMs: 60_000, logger: silentLogger }),
    };
  };

  test('after downtime the missed ticks of the window are enqueued once, oldest first, and run oldest first', async () => {
    const clock = new ManualClock('2026-05-07T08:00:10Z');
    const before = firer(clock);
    await before.firer.fire();
    expect(await keys()).toEqual(['schedule:test-daily@2026-05-07T08:00:00.000Z']);
    // Down from the 7th to the 10th at 10:00: the 8th, 9th and 10th are missed; the window reaches the 8th.
    clock.set('2026-05-10T10:00:00Z');
    const a = firer(clock);
    const b = firer(clock);
    await Promise.all([a.firer.fire(), b.firer.fire()]);
    await a.firer.fire();
    expect(await keys()).toEqual([
      'schedule:test-daily@2026-05-07T08:00:00.000Z',
      'schedule:test-daily@2026-05-08T08:00:00.000Z',
      'schedule:test-daily@2026-05-09T08:00:00.000Z',
      'schedule:test-daily@2026-05-10T08:00:00.000Z',
    ]);
    const claimed = await a.tracker.fetchReady(10);
    expect(claimed.map((j) => j.payload)).toEqual([{ n: 7 }, { n: 8 }, { n: 9 }, { n: 10 }]);
  });

  test("a schedule's first tick ever fills nothing: a window it never ran in was not missed", async () => {
    const clock = new ManualClock('2026-05-10T10:00:00Z');
    await firer(clock).firer.fire();
    expect(await keys()).toEqual(['schedule:test-daily@2026-05-10T08:00:00.000Z']);
  });

  test('a backfilled tick whose job retention deleted is not enqueued again', async () => {
    const clock = new ManualClock('2026-05-07T08:00:10Z');
    await firer(clock).firer.fire();
    clock.set('2026-05-10T10:00:00Z');
    await firer(clock).firer.fire();
    expect(await keys()).toHaveLength(4);
    await t.db.query('DELETE FROM jobs');
    await firer(clock).firer.fire();
    expect(await keys()).toEqual([]);
    // The next tick is new.
    clock.set('2026-05-11T08:00:20Z');
    await firer(clock).firer.fire();
    expect(await keys()).toEqual(['schedule:test-daily@2026-05-11T08:00:00.000Z']);
  });

  test('a tick whose job its type refuses writes nothing, neither job nor tick', async () => {
    const clock = new ManualClock('2026-05-10T10:00:00Z');
    const refused = { ...daily, job: () => ({ type: 'noop', payload: { n: 'not a number' } }) };
    const { tracker } = firer(clock);
    await expect(
      tracker.enqueueScheduleTicks(
        ticksToFire(refused, clock.now()).map((tick) => ({
          schedule: refused.name,
          tick,
          job: refused.job(),
        })),
      ),
    ).rejects.toThrow(/n/);
    expect(await keys()).toEqual([]);
    expect(await tickRows()).toBe(0);
  });

  test('a schedule without a window still fires only its latest tick', async () => {
    const clock = new ManualClock('2026-05-10T10:00:00Z');
    const { backfill: _, ...plain } = daily;
    await firer(clock, [plain]).firer.fire();
    expect(await keys()).toEqual(['schedule:test-daily@2026-05-10T08:00:00.000Z']);
    expect(await tickRows()).toBe(0);
  });
});

describe('backfill through the Data API client that resends', () => {
  test('a tick statement the client sends again inside the transaction still enqueues its ticks once', async () => {
    const clock = new ManualClock('2026-05-07T08:00:10Z');
    const first = new JobTracker({ db: dataApi, registry: createCoreRegistry(), clock });
    await new ScheduleFirer({
      tracker: first,
      schedules: [daily],
      intervalMs: 60_000,
      logger: silentLogger,
    }).fire();
    clock.set('2026-05-10T10:00:00Z');
    // The record statement runs, then its answer is lost; the SDK sends it again in the transaction.
    fixture.injectFault({
      error: 'InternalServerErrorException',
      status: 500,
      operation: 'Execute',
      afterRunning: true,
    });
    const retrying = dataApiDriverOver(fixture, t.name, { sdkRetries: true });
    try {
      const tracker = new JobTracker({ db: retrying, registry: createCoreRegistry(), clock });
      await new ScheduleFirer({
        tracker,
        schedules: [daily],
        intervalMs: 60_000,
        logger: silentLogger,
      }).fire();
    } finally {
      fixture.clearFaults();
      await retrying.close();
    }
    expect(await keys()).toEqual([
      'schedule:test-daily@2026-05-07T08:00:00.000Z',
      'schedule:test-daily@2026-05-08T08:00:00.000Z',
      'schedule:test-daily@2026-05-09T08:00:00.000Z',
      'schedule:test-daily@2026-05-10T08:00:00.000Z',
    ]);
  });
});
