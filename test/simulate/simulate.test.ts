import { afterAll, describe, expect, test } from 'vitest';
import { AccountConcurrency, SimLambda, throttleRetryMs } from '../../bench/simulate/lambda.js';
import { type Scenario, type ScenarioResult, simulate } from '../../bench/simulate/simulate.js';
import { VirtualTime } from '../../bench/simulate/virtual-time.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { prng } from '../support/prng.js';

/**
 * Issue 15's scenarios, scaled down, through the real handlers and SQL in virtual time
 * (`npm run simulate` runs them at full size): their targets hold.
 */
const databases: TestDatabase[] = [];
afterAll(async () => {
  for (const d of databases) await d.drop();
});

async function run(scenario: Scenario, seed = 7): Promise<ScenarioResult> {
  const t = await createTestDatabase({ poolSize: 20 });
  databases.push(t);
  return simulate(scenario, { pg: t.db, url: t.url, name: t.name }, { seed });
}

describe('the AWS path under load (virtual time)', () => {
  test('S1 backlog: drains at the executors’ capacity', { timeout: 120_000 }, async () => {
    const r = await run({ name: 'S1', backlog: 1000, durationMs: 1000, concurrency: 50 });
    expect(r.drainVsIdeal).toBeLessThanOrEqual(1.1);
    expect(r.maxConcurrentExecutions).toBeLessThanOrEqual(r.concurrencyLimit);
    expect(r.dataApiCallsPerJob).toBeLessThanOrEqual(2.2);
  });

  test(
    'S2 overload: no attempt burned, nothing dropped, no overlap, never above the limit',
    { timeout: 120_000 },
    async () => {
      const r = await run({ name: 'S2', backlog: 60, durationMs: 10_000, concurrency: 5 });
      expect(r).toMatchObject({
        attemptsBurned: 0,
        jobsFailedWithoutRun: 0,
        dlqEvents: 0,
        overlappingAttempts: 0,
      });
      expect(r.maxConcurrentExecutions).toBeLessThanOrEqual(r.concurrencyLimit);
      expect(r.dataApiCallsPerJob).toBeLessThanOrEqual(2.2);
    },
  );

  test('S3 steady: jobs start within 2 s of their enqueue', { timeout: 120_000 }, async () => {
    const r = await run({
      name: 'S3',
      stream: { perSecond: 50, seconds: 6 },
      durationMs: 200,
      concurrency: 20,
    });
    expect(r.pickupP99Seconds).toBeLessThanOrEqual(2);
    expect(r.dataApiCallsPerJob).toBeLessThanOrEqual(2.2);
  });

  test(
    'S4 nudge storm: a nudge per enqueue wakes fetch-ready at most twice a second',
    { timeout: 120_000 },
    async () => {
      const r = await run({
        name: 'S4',
        stream: { perSecond: 100, seconds: 4 },
        durationMs: 100,
        concurrency: 20,
      });
      expect(r.fetchReadyPerSecondMax).toBeLessThanOrEqual(2);
      expect(r.dataApiCallsPerJob).toBeLessThanOrEqual(2.2);
      expect(r.pickupP99Seconds).toBeLessThanOrEqual(2);
    },
  );

  test('a seed replays exactly', { timeout: 120_000 }, async () => {
    const scenario: Scenario = { name: 'replay', backlog: 60, durationMs: 1000, concurrency: 10 };
    const [a, b] = [await run(scenario, 42), await run(scenario, 42)];
    expect(b).toEqual(a);
  });
});

describe('the simulation’s own parts', () => {
  test('virtual time runs timers in order, one at a time, and draws the same numbers for a seed', async () => {
    const vt = new VirtualTime(0);
    const order: string[] = [];
    void vt.sleep(300).then(() => order.push('c'));
    void vt.sleep(100).then(() => order.push('a'));
    void vt.sleep(100).then(() => order.push('b'));
    await vt.run(() => order.length === 3);
    expect(order).toEqual(['a', 'b', 'c']);
    expect(vt.now).toBe(300);
    const r1 = prng(9);
    const r2 = prng(9);
    expect([r1(), r1(), r1()]).toEqual([r2(), r2(), r2()]);
  });

  test('a throttled event is retried with 1 s doubling to 5 min, then dropped past its maximum age', async () => {
    expect([0, 1, 2, 8, 9, 12].map(throttleRetryMs)).toEqual([1000, 2000, 4000, 256_000, 300_000, 300_000]);
    const vt = new VirtualTime(0);
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    const fn = new SimLambda(vt, {
      name: 'f',
      reservedConcurrency: 1,
      account: new AccountConcurrency(1000),
      timeoutMs: 900_000,
      maxEventAgeMs: 60_000,
      deliveryMs: 0,
      handler: () => held,
    });
    fn.invoke('first'); // takes the only slot and holds it
    fn.invoke('second'); // throttled: retried at 1, 2, 4, 8, 16 s (31 s), then its next wait passes 60 s
    await vt.run(() => fn.dropped === 1);
    expect(fn.throttles).toBe(6);
    expect(fn.invocations).toBe(1);
    release();
  });
});
