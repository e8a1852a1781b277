import { afterAll, describe, expect, test } from 'vitest';
import { claimLockKeys, DatabaseModel } from '../../bench/simulate/database.js';
import {
  AccountConcurrency,
  currentInvocation,
  SimLambda,
  throttleRetryMs,
} from '../../bench/simulate/lambda.js';
import {
  EVERY_FAULT,
  mixedTypes,
  pausedThenResumed,
  plannedWorkMs,
  rateLimitedNotifications,
  type Scenario,
  type ScenarioResult,
  type SimulationOptions,
  scenarios,
  simulate,
  typeLoads,
} from '../../bench/simulate/simulate.js';
import { VirtualTime } from '../../bench/simulate/virtual-time.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { prng } from '../support/prng.js';

/**
 * Issue 15's and issue 25's scenarios, scaled down, through the real handlers and SQL in virtual time,
 * with database time charged at the stack's default capacity (`npm run simulate` runs them at full
 * size): their targets hold.
 */
const databases: TestDatabase[] = [];
afterAll(async () => {
  for (const d of databases) await d.drop();
});

async function run(
  scenario: Scenario,
  seed = 7,
  options: Partial<SimulationOptions> = {},
): Promise<ScenarioResult> {
  const t = await createTestDatabase({ poolSize: 20 });
  databases.push(t);
  return simulate(scenario, { pg: t.db, url: t.url, name: t.name }, { seed, ...options });
}

describe('the AWS path under load (virtual time)', () => {
  test('S1 backlog: drains at the executors’ capacity at 20 and 100 ms', { timeout: 240_000 }, async () => {
    // A tenth of S1's concurrency, so that the start (cold environments, the first claims) weighs on a
    // small run about as little as on the full one.
    const scenario: Scenario = { name: 'S1', backlog: 600, durationMs: 1000, concurrency: 10 };
    const at = async (dataApiLatencyMs: number) => {
      const r = await run(scenario, 7, { dataApiLatencyMs });
      expect(r.maxConcurrentExecutions).toBeLessThanOrEqual(r.concurrencyLimit);
      expect(r.dataApiCallsPerJob).toBeLessThanOrEqual(2.2);
      // Database time was charged, and every executor environment started cold once.
      expect(r.dbSecondsPerJob).toBeGreaterThan(0);
      expect(r.coldStarts).toBeGreaterThanOrEqual(10);
      return r.drainVsIdeal;
    };
    expect(await at(20)).toBeLessThanOrEqual(1.1);
    // Issue 25's 1.1 at 100 ms too: each executor holds its type's next job behind the running one, so the
    // slot passes to it as the running one ends, without idling for the statement's round trip (about
    // 1.03 to 1.05 × ideal here over seeds; 1.14 to 1.16 without jobs behind).
    expect(await at(100)).toBeLessThanOrEqual(1.1);
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

  test(
    'S5 mixed: the six types at once, notifications saturated, every other type starts within 2 s',
    { timeout: 300_000 },
    async () => {
      const r = await run({ name: 'S5', types: mixedTypes(12), senders: 4, saturated: ['notification'] });
      expect(r.typesOverLimit).toEqual([]);
      expect(r.byType.notification!.maxRunning).toBe(20);
      for (const [type, t] of Object.entries(r.byType)) {
        expect(t.jobs, type).toBeGreaterThan(0);
        if (type !== 'notification') expect(t.pickupP99Seconds, type).toBeLessThanOrEqual(2);
      }
      expect(r).toMatchObject({ jobsNotFinal: 0, attemptsBurned: 0, overlappingAttempts: 0 });
    },
  );

  test(
    'S6 sparse: a lone job starts without fetch-ready, one event and two statements per job',
    { timeout: 120_000 },
    async () => {
      const r = await run(
        { name: 'S6', stream: { perSecond: 0.2, seconds: 60 }, durationMs: 200, concurrency: 20 },
        7,
        { coldStartMs: 0 },
      );
      expect(r.pickupP99Seconds).toBeLessThanOrEqual(1);
      expect(r.putEventsCallsPerJob).toBeLessThanOrEqual(1.1);
      // The executor's start and its completion (the enqueue claims in its own statement), plus the
      // minute's fetch-ready run.
      expect(r.dataApiCallsPerJob).toBeLessThanOrEqual(2.5);
      expect(r.costPerMillionJobsUsd).toBeLessThanOrEqual(4);
      expect(r.fetchReadyInvocations).toBeLessThanOrEqual(2);
    },
  );

  test(
    'S8 rate-limited notifications: at 14 a second, none throttled by the provider, none burned',
    { timeout: 300_000 },
    async () => {
      // 100 s of SES's default rate (the full scenario is 10,000 reminders).
      const r = await run({ name: 'S8', types: [rateLimitedNotifications(1400)] });
      const t = r.byType.notification!;
      expect(r.providerThrottles).toBe(0);
      expect(t.maxStartsPerRateWindow).toBeLessThanOrEqual(14);
      expect(r).toMatchObject({
        jobsNotFinal: 0,
        attemptsBurned: 0,
        overlappingAttempts: 0,
        typesOverLimit: [],
      });
      // Drained at the rate: 1,400 / 14 s.
      expect(r.idealSeconds).toBe(100);
      expect(r.drainVsIdeal).toBeLessThanOrEqual(1.05);
    },
  );

  test(
    'S9 pause and resume: no claim while paused, running jobs finish, every job drains after the resume',
    { timeout: 120_000 },
    async () => {
      const r = await run({ name: 'S9', types: [pausedThenResumed(600)] });
      const t = r.byType['sim-work']!;
      expect(t.claimsWhilePaused).toBe(0);
      expect(t.resumeToStartSeconds).toBeGreaterThan(0);
      expect(r).toMatchObject({ jobsNotFinal: 0, attemptsBurned: 0, overlappingAttempts: 0, jobsFailed: 0 });
      expect(t.maxRunning).toBeLessThanOrEqual(t.limit);
    },
  );

  test(
    'S7 faults: with every fault drawn, nothing lost, burned or overlapping, every job final',
    { timeout: 300_000 },
    async () => {
      const r = await run({
        name: 'S7',
        stream: { perSecond: 50, seconds: 8 },
        durationMs: 200,
        concurrency: 20,
        senders: 4,
        // At this size only about a hundred events are published (most jobs are an executor's next job):
        // at the scenario's 1 % a duplicate is drawn in only about two runs of three, so here 10 %.
        faults: { ...EVERY_FAULT, duplicateDeliveryRate: 0.1 },
      });
      expect(r).toMatchObject({
        jobsNotFinal: 0,
        attemptsBurned: 0,
        overlappingAttempts: 0,
        jobsFailedWithoutRun: 0,
        typesOverLimit: [],
      });
      // The faults happened: failed attempts were retried, a duplicate was delivered, calls were resent.
      expect(r.attemptsPerJobMax).toBeGreaterThan(1);
      expect(r.duplicatesDelivered).toBeGreaterThan(0);
      expect(r.dataApiResends).toBeGreaterThan(0);
      expect(r.maxConcurrentExecutions).toBeLessThanOrEqual(r.concurrencyLimit);
    },
  );

  test('a seed replays exactly in the legacy model', { timeout: 120_000 }, async () => {
    const scenario: Scenario = { name: 'replay', backlog: 60, durationMs: 1000, concurrency: 10 };
    const [a, b] = [
      await run(scenario, 42, { model: 'legacy' }),
      await run(scenario, 42, { model: 'legacy' }),
    ];
    expect(b).toEqual(a);
  });

  test(
    'a seed gives the same control flow when database time is measured',
    { timeout: 120_000 },
    async () => {
      const scenario: Scenario = { name: 'replay', backlog: 60, durationMs: 1000, concurrency: 10 };
      const [a, b] = [await run(scenario, 42), await run(scenario, 42)];
      const flow = (r: ScenarioResult) => ({
        jobs: r.jobs,
        attemptsBurned: r.attemptsBurned,
        overlappingAttempts: r.overlappingAttempts,
        maxConcurrentExecutions: r.maxConcurrentExecutions,
        fetchReadyInvocations: r.fetchReadyInvocations,
        coldStarts: r.coldStarts,
      });
      expect(flow(b)).toEqual(flow(a));
      expect(Math.abs(b.drainSeconds - a.drainSeconds) / a.drainSeconds).toBeLessThan(0.05);
    },
  );
});

describe('the simulation’s own parts', () => {
  test('the database: a drawn latency around its median, vCPUs as a queue, claim locks by type', async () => {
    const vt = new VirtualTime(0);
    const db = new DatabaseModel(vt, { model: 'charged', latencyMs: 20, acu: 4, random: prng(3) });
    const draws = Array.from({ length: 2001 }, () => db.drawLatency()).sort((a, b) => a - b);
    expect(draws[1000]!).toBeGreaterThan(18);
    expect(draws[1000]!).toBeLessThan(22);
    // A tail: p99 well above the median.
    expect(draws[1980]!).toBeGreaterThan(50);
    expect(db.vcpus).toBe(1);
    // Two statements of 10 ms of CPU at once on one vCPU: the second waits for the first.
    const steady = new DatabaseModel(vt, {
      model: 'charged',
      latencyMs: 20,
      latencySigma: 0,
      acu: 4,
      random: prng(3),
    });
    const lane = steady.lane;
    const statement = async () => {
      lane.record(0, 10);
      return { rows: [], rowCount: 0 };
    };
    const ends: number[] = [];
    for (let i = 0; i < 2; i++) void steady.call('SELECT 1', {}, statement).then(() => ends.push(vt.now));
    await vt.run(() => ends.length === 2);
    expect(ends[1]! - ends[0]!).toBeCloseTo(10, 0);
    expect(
      claimLockKeys('SELECT * FROM lana_jobs_claim_limited(:limits)', { limits: '{"b":1,"a":2}' }),
    ).toEqual(['a', 'b']);
    expect(
      claimLockKeys('SELECT * FROM lana_jobs_claim_limited(:limits)', { limits: '{"a":1}', only_type: 'x' }),
    ).toEqual(['x']);
    expect(claimLockKeys('UPDATE jobs SET status = 1', {})).toEqual([]);
    // A slot claim that runs while a write of its type commits is counted (PostgreSQL would make it skip
    // that write's rows); one of another type, or after the commit, is not.
    const two = new DatabaseModel(vt, {
      model: 'charged',
      latencyMs: 20,
      latencySigma: 0,
      acu: 8,
      commitMs: 5,
      random: prng(3),
    });
    const noRows = async () => ({ rows: [], rowCount: 0 });
    const claim = 'SELECT * FROM lana_jobs_claim_slotted(:limits, :only_type)';
    let done = 0;
    const send = (at: number, sql: string, type: string) =>
      vt.at(vt.now + at, () => void two.call(sql, { only_type: type }, noRows).then(() => done++));
    // The update runs at +10 ms and commits until +15; the claims of `a` and `b` run at +12, the last at +30.
    send(0, 'UPDATE jobs SET status = :s', 'a');
    send(2, claim, 'a');
    send(2, claim, 'b');
    send(20, claim, 'a');
    await vt.run(() => done === 4);
    expect(two.claims).toBe(3);
    expect(two.claimsDuringAnothersCommit).toBe(1);
  });

  test('Lambda: cold starts per new environment, timeouts kill, the unreserved pool is shared', async () => {
    const vt = new VirtualTime(0);
    // An account of 2 concurrent executions, none reserved: every function shares them.
    const account = new AccountConcurrency(2);
    const seen: boolean[] = [];
    const make = (name: string, work: number) =>
      new SimLambda(vt, {
        name,
        account,
        timeoutMs: 1000,
        maxEventAgeMs: 60_000,
        deliveryMs: 0,
        coldStartMs: 400,
        random: () => 0.5,
        handler: async () => {
          await vt.sleep(work);
          seen.push(currentInvocation()!.killed);
        },
      });
    const quick = make('quick', 100);
    const slow = make('slow', 5000);
    quick.invoke('a');
    await vt.run(() => quick.running === 0 && quick.invocations === 1);
    quick.invoke('b'); // reuses the warm environment
    await vt.run(() => quick.invocations === 2 && quick.running === 0);
    expect(quick.coldStarts).toBe(1);
    slow.invoke('c'); // killed by its 1 s timeout
    slow.invoke('d');
    quick.invoke('e'); // the two unreserved slots are both taken by slow: throttled
    await vt.run(() => slow.timedOut === 2 && quick.invocations === 3);
    expect(quick.throttles).toBeGreaterThan(0);
    expect(slow.failed).toBe(2);
    await vt.run(() => seen.length === 5);
    // The killed invocations' code finds itself killed.
    expect(seen.filter((k) => k)).toHaveLength(2);
    expect(() => new AccountConcurrency(105).reserve(10)).toThrow(/100 executions unreserved/);
  });

  test('a run waits out its planned work: S2 at full size is 5.6 hours at its limit, past the 3-hour floor', () => {
    const full = scenarios(1);
    const s2 = full.find((s) => s.name === 'S2 overload')!;
    // 10,000 jobs of 10 s, five at a time.
    expect(plannedWorkMs(typeLoads(s2))).toBe(20_000_000);
    const s3 = full.find((s) => s.name === 'S3 steady')!;
    // 30,000 jobs of 200 ms, twenty at a time: the 3-hour floor governs.
    expect(plannedWorkMs(typeLoads(s3))).toBe(300_000);
  });

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
