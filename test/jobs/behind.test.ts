import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { z } from 'zod';
import { AwsExecutor, type ExecutorLog } from '../../shared/aws/executor.js';
import type { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import type { Database, QueryResult, SqlParams } from '../../shared/db/port.js';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { DISPATCH_LEASE_SECONDS, JobTypeRegistry } from '../../shared/jobs/registry.js';
import * as sql from '../../shared/jobs/sql.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { type DataApiFixture, dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * A job claimed behind the running one in its slot (`shared/jobs/sql/behind.ts`): it holds no slot row
 * while it waits, takes the slot of the job ahead in the statement that completes that one, starts as
 * that one ends, and goes back uncounted, freeing nothing, if its executor dies first.
 */
let onRun: (type: string, id: string, signal: AbortSignal) => Promise<void> | void = () => {};
function registry() {
  const execute =
    (type: string) => async (_payload: unknown, ctx: { job: { id: string }; signal: AbortSignal }) => {
      await onRun(type, ctx.job.id, ctx.signal);
      return undefined;
    };
  return new JobTypeRegistry()
    .register({
      type: 'beta',
      description: 'limited to 2',
      schema: z.object({ n: z.number().int() }),
      concurrency: 2,
      timeoutSeconds: 60,
      execute: execute('beta'),
    })
    .register({
      type: 'solo',
      description: 'limited to 1',
      schema: z.object({ n: z.number().int() }),
      concurrency: 1,
      timeoutSeconds: 60,
      execute: execute('solo'),
    })
    .register({
      type: 'capped',
      description: 'limited to 3',
      schema: z.object({ n: z.number().int() }),
      concurrency: 3,
      timeoutSeconds: 60,
      execute: execute('capped'),
    });
}
type Registry = ReturnType<typeof registry>;
type Tracker = JobTracker<Registry['schemas']>;

let t: TestDatabase;
let fixture: DataApiFixture;
let dataApi: DataApiDatabase;
let clock: ManualClock;

beforeAll(async () => {
  t = await createTestDatabase({ poolSize: 16 });
  fixture = await startDataApiFixture(t.url, { poolSize: 16 });
  dataApi = dataApiDriverOver(fixture, t.name);
});
afterAll(async () => {
  await dataApi?.close();
  await fixture?.close();
  await t?.drop();
});
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_execution_records, job_type_pauses CASCADE');
  clock = new ManualClock('2026-06-01T00:00:00Z');
  onRun = () => {};
});

const trackerOver = (db: Database, withClock = true): Tracker =>
  new JobTracker({ db, registry: registry(), ...(withClock ? { clock } : {}) });

async function enqueue(tracker: Tracker, type: 'beta' | 'solo' | 'capped', n: number) {
  await tracker.enqueueMany(Array.from({ length: n }, (_, i) => ({ type, payload: { n: i } })));
}

async function holders(type: string): Promise<string[]> {
  const r = await t.db.query<{ holder: string }>(
    'SELECT holder::text AS holder FROM job_slots WHERE job_type = :type AND holder IS NOT NULL',
    { type },
  );
  return r.rows.map((x) => x.holder).sort();
}

async function row(id: string) {
  const r = await t.db.query<{
    status: string;
    attempts: number;
    max_attempts: number;
    started_at: Date | null;
    lease_expires_at: Date | null;
    slot: number | null;
  }>('SELECT status, attempts, max_attempts, started_at, lease_expires_at, slot FROM jobs WHERE id = :id', {
    id,
  });
  return r.rows[0]!;
}

async function slotOf(id: string): Promise<number | null> {
  const r = await t.db.query<{ slot: number }>(
    'SELECT slot FROM job_slots WHERE holder = CAST(:id AS uuid)',
    { id },
  );
  return r.rows[0]?.slot ?? null;
}

/** Both of beta's slots held by begun jobs, three more due: the first completion claims one behind. */
async function saturated(tracker: Tracker) {
  await enqueue(tracker, 'beta', 5);
  const held = await tracker.fetchReady(2, { jobType: 'beta' });
  for (const j of held) expect(await tracker.startAttempt(j.id, j.attempts)).not.toBeNull();
  const [a, other] = held as [(typeof held)[0], (typeof held)[0]];
  const first = await tracker.completeAndClaimBehind(
    { id: a.id, attempt: a.attempts, durationMs: 5 },
    null,
    'beta',
    true,
  );
  return { a, other, ...first };
}

describe.each([
  ['node-postgres', () => t.db],
  ['Data API', () => dataApi],
])('a job behind the running one (%s)', (_name, db) => {
  test('holds no slot; the slot passes to it as the job ahead completes; a resent statement does nothing more', async () => {
    const tracker = trackerOver(db());
    const { a, other, completed, next, behind, begun } = await saturated(tracker);
    expect(completed).toBe(true);
    expect(begun).toBe(false);
    // The next job took the finished one's slot; the one behind it runs under a dispatch lease with that
    // slot's number, and no slot row is its own: the slot table counts two jobs.
    expect(next).not.toBeNull();
    expect(behind).not.toBeNull();
    expect(await holders('beta')).toEqual([other.id, next!.id].sort());
    const waiting = await row(behind!.id);
    expect(waiting).toMatchObject({ status: 'running', started_at: null, slot: await slotOf(next!.id) });
    expect(waiting.lease_expires_at!.getTime() - clock.now().getTime()).toBe(DISPATCH_LEASE_SECONDS * 1000);
    expect(await slotOf(behind!.id)).toBeNull();
    expect(await row(a.id)).toMatchObject({ status: 'completed' });
    // Nothing else can be claimed: both slots are held.
    expect(await tracker.fetchReady(5, { jobType: 'beta' })).toEqual([]);

    // The job ahead completes: its slot passes to the one behind, which is begun (its run's lease) in the
    // same statement, and the type's last due job is claimed behind it. Sent twice, as a driver resends a
    // statement whose answer was lost after its commit.
    clock.advance(1000);
    const token = randomUUID();
    const params: SqlParams = {
      now: clock.now(),
      id: next!.id,
      attempt: next!.attempts,
      duration_ms: 7,
      behind_id: behind!.id,
      behind_attempt: behind!.attempts,
      behind: true,
      token,
      claim_token: token,
      start_now: false,
      limits: JSON.stringify({ beta: 2, solo: 1, capped: 3 }),
      only_type: 'beta',
      dispatch_lease_seconds: DISPATCH_LEASE_SECONDS,
    };
    type Answer = { applied: boolean; role: string | null; id: string | null };
    const first = (await db().query<Answer>(sql.completeAndClaimBehindSql, params)).rows;
    const state = async () =>
      (
        await t.db.query(
          'SELECT id, status, attempts, started_at, lease_expires_at, slot FROM jobs ORDER BY id',
        )
      ).rows;
    const after = { jobs: await state(), holders: await holders('beta') };
    const again = (await db().query<Answer>(sql.completeAndClaimBehindSql, params)).rows;
    const answer = (rows: Answer[]) =>
      rows
        .map((r) => ({ applied: r.applied, role: r.role, id: r.id }))
        .sort((x, y) => (x.role! < y.role! ? -1 : 1));
    expect(answer(again)).toEqual(answer(first));
    expect({ jobs: await state(), holders: await holders('beta') }).toEqual(after);

    const begunRow = first.find((r) => r.role === 'next')!;
    const nextBehind = first.find((r) => r.role === 'behind')!;
    expect(first.every((r) => r.applied)).toBe(true);
    expect(begunRow.id).toBe(behind!.id);
    const b = await row(behind!.id);
    expect(b.started_at).toEqual(clock.now());
    // 60 s timeout + 120 s grace.
    expect(b.lease_expires_at!.getTime() - clock.now().getTime()).toBe(180_000);
    expect(await holders('beta')).toEqual([other.id, behind!.id].sort());
    const slotRow = await t.db.query<{ expires_at: Date }>(
      'SELECT expires_at FROM job_slots WHERE holder = CAST(:id AS uuid)',
      { id: behind!.id },
    );
    expect(slotRow.rows[0]!.expires_at).toEqual(b.lease_expires_at);
    expect(await row(nextBehind.id!)).toMatchObject({ status: 'running', started_at: null, slot: b.slot });
    expect(await slotOf(nextBehind.id!)).toBeNull();
    expect(await row(next!.id)).toMatchObject({ status: 'completed' });
  });

  test('whose executor dies is handed back uncounted within its dispatch lease, freeing nothing', async () => {
    const tracker = trackerOver(db());
    const { other, next, behind } = await saturated(tracker);
    expect(await tracker.startAttempt(next!.id, next!.attempts)).not.toBeNull();
    // The executor holding both dies: the one behind is never begun.
    clock.advance((DISPATCH_LEASE_SECONDS + 1) * 1000);
    const rescued = await tracker.rescueExpiredLeases();
    expect(rescued).toEqual([
      expect.objectContaining({ id: behind!.id, undelivered: true, status: 'pending' }),
    ]);
    const job = await row(behind!.id);
    // Its attempt number stays used but does not count.
    expect(job.max_attempts - job.attempts).toBe(6);
    // The running job ahead keeps its slot: the type is still at its limit.
    expect(await holders('beta')).toEqual([other.id, next!.id].sort());
    expect(await tracker.fetchReady(5, { jobType: 'beta' })).toEqual([]);
  });

  test('is not claimed while the type is paused, nor while a slot is free', async () => {
    const tracker = trackerOver(db());
    const { other, next, behind } = await saturated(tracker);
    await tracker.pauseType('beta', { by: 'test' });
    // The job already behind still takes the slot (it was claimed before the pause); nothing more is.
    const r = await tracker.completeAndClaimBehind(
      { id: next!.id, attempt: next!.attempts },
      { id: behind!.id, attempt: behind!.attempts },
      'beta',
      true,
    );
    expect(r).toMatchObject({ completed: true, begun: true, behind: null });
    const paused = await tracker.completeAndClaimBehind(
      { id: behind!.id, attempt: behind!.attempts },
      null,
      'beta',
      true,
    );
    expect(paused).toMatchObject({ completed: true, next: null, behind: null });
    await tracker.resumeType('beta');
    // With a slot free, a due job goes into it, not behind another.
    expect(await tracker.markCompleted(other.id, other.attempts)).toBe(true);
    await enqueue(tracker, 'beta', 2);
    const [c] = await tracker.fetchReady(1, { jobType: 'beta' });
    await tracker.startAttempt(c!.id, c!.attempts);
    const free = await tracker.completeAndClaimBehind(
      { id: c!.id, attempt: c!.attempts },
      null,
      'beta',
      true,
    );
    expect(free.next).not.toBeNull();
    expect(free.behind).toBeNull();
  });
});

const silent: ExecutorLog = { info() {}, warn() {}, error() {}, appendKeys() {} };

/**
 * A driver that sends the statement beginning a job behind only after `before` (which may throw, as a
 * failed call); `late()` says whether it gave up waiting for it (after 5 s) instead.
 */
function gated(db: Database, before: () => Promise<void>): { db: Database; late: () => boolean } {
  let late = false;
  const wrapped = new Proxy(db, {
    get(target, prop, receiver) {
      if (prop !== 'query') return Reflect.get(target, prop, receiver);
      return async (text: string, params?: SqlParams): Promise<QueryResult<never>> => {
        if (text === sql.completeAndClaimBehindSql && params?.behind_id) {
          const opened = await Promise.race([
            before().then(() => true),
            new Promise<boolean>((r) => setTimeout(() => r(false), 5000)),
          ]);
          if (!opened) late = true;
        }
        return target.query(text, params as SqlParams);
      };
    },
  });
  return { db: wrapped, late: () => late };
}

describe("an executor's jobs behind", () => {
  test('run one after another in the slot, each starting before the statement that begins it', async () => {
    const base = trackerOver(dataApi, false);
    await enqueue(base, 'solo', 3);
    const [delivered] = await base.fetchReady(1, { jobType: 'solo' });
    let opened!: () => void;
    const gate = new Promise<void>((r) => {
      opened = r;
    });
    const order: string[] = [];
    let running = 0;
    let most = 0;
    onRun = async (_type, id) => {
      order.push(id);
      running++;
      most = Math.max(most, running);
      // The first job's completion claimed the second into the slot and the third behind it: the third
      // starts while the statement that begins it is still held back.
      if (order.length === 3) opened();
      await new Promise((r) => setTimeout(r, 5));
      running--;
    };
    const held = gated(dataApi, () => gate);
    const tracker = new JobTracker({ db: held.db, registry: registry() });
    fixture.resetCounts();
    const executor = new AwsExecutor({
      tracker,
      dispatcher: new JobDispatcher(tracker.registry, undefined),
      jobType: 'solo',
      log: silent,
    });
    const r = await executor.run({ jobId: delivered!.id, attempt: delivered!.attempts }, () => 3_600_000);
    expect(r).toEqual({ outcome: 'completed', nextJobsRun: 2 });
    // The job behind started while the statement that begins it was held back.
    expect(held.late()).toBe(false);
    expect(most).toBe(1);
    expect(order[0]).toBe(delivered!.id);
    // One statement per job, as without jobs behind: the start, then a completion each (which also
    // claimed the next into the slot, then behind it, and passed the slot on).
    expect(fixture.counts.Execute).toBeLessThanOrEqual(1 + 1 + 3);
    const done = await t.db.query<{ n: number }>(
      "SELECT count(*)::integer AS n FROM jobs WHERE job_type = 'solo' AND status = 'completed'",
    );
    expect(done.rows[0]!.n).toBe(3);
    expect(await holders('solo')).toEqual([]);
  });

  test('a job behind is stopped before the invocation ends when the statement that begins it fails', async () => {
    const base = trackerOver(dataApi);
    await enqueue(base, 'solo', 3);
    const [delivered] = await base.fetchReady(1, { jobType: 'solo' });
    const order: string[] = [];
    let abortedBehind = false;
    onRun = async (_type, id, signal) => {
      order.push(id);
      if (order.length < 3) return;
      // The job behind: it runs until its executor cuts it short.
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()));
      abortedBehind = true;
    };
    const held = gated(dataApi, async () => {
      throw new Error('the Data API call failed');
    });
    const tracker = new JobTracker({ db: held.db, registry: registry(), clock });
    const executor = new AwsExecutor({
      tracker,
      dispatcher: new JobDispatcher(tracker.registry, undefined),
      jobType: 'solo',
      log: silent,
    });
    await expect(
      executor.run({ jobId: delivered!.id, attempt: delivered!.attempts }, () => 3_600_000),
    ).rejects.toThrow(/the Data API call failed/);
    expect(abortedBehind).toBe(true);
    // Nothing was written for it: still behind, unbegun, and its lease brings it back uncounted.
    const behindId = order[2]!;
    expect(await row(behindId)).toMatchObject({ status: 'running', started_at: null });
    clock.advance((DISPATCH_LEASE_SECONDS + 1) * 1000);
    const rescued = await base.rescueExpiredLeases();
    expect(rescued).toContainEqual(expect.objectContaining({ id: behindId, undelivered: true }));
  });

  test('a job behind that was cancelled meanwhile is stopped, and the invocation goes on', async () => {
    const base = trackerOver(dataApi, false);
    await enqueue(base, 'solo', 4);
    const [delivered] = await base.fetchReady(1, { jobType: 'solo' });
    const order: string[] = [];
    let cancelled = '';
    let abortedBehind = false;
    onRun = async (_type, id, signal) => {
      order.push(id);
      if (order.length === 2) {
        // The second job runs; the one behind it is cancelled by an operator.
        const waiting = await t.db.query<{ id: string }>(
          "SELECT id FROM jobs WHERE job_type = 'solo' AND status = 'running' AND id <> :id",
          { id },
        );
        cancelled = waiting.rows[0]!.id;
        await base.cancel(cancelled);
      }
      if (id === cancelled) {
        await new Promise<void>((resolve) => {
          signal.addEventListener('abort', () => resolve());
          setTimeout(resolve, 2000);
        });
        abortedBehind = signal.aborted;
      }
    };
    const executor = new AwsExecutor({
      tracker: base,
      dispatcher: new JobDispatcher(base.registry, undefined),
      jobType: 'solo',
      log: silent,
    });
    const r = await executor.run({ jobId: delivered!.id, attempt: delivered!.attempts }, () => 3_600_000);
    expect(abortedBehind).toBe(true);
    expect(await row(cancelled)).toMatchObject({ status: 'cancelled' });
    // The other jobs all ran and completed; the slot is free at the end.
    expect(r.outcome).toBe('completed');
    const done = await t.db.query<{ n: number }>(
      "SELECT count(*)::integer AS n FROM jobs WHERE job_type = 'solo' AND status = 'completed'",
    );
    expect(done.rows[0]!.n).toBe(3);
    expect(await holders('solo')).toEqual([]);
  });

  test('never run more of a type at once than its limit, across many executors', async () => {
    const tracker = trackerOver(t.db, false);
    await enqueue(tracker, 'capped', 60);
    let running = 0;
    let most = 0;
    const ran = new Map<string, number>();
    let mostBehind = 0;
    let mostHolders = 0;
    onRun = async (_type, id) => {
      ran.set(id, (ran.get(id) ?? 0) + 1);
      running++;
      most = Math.max(most, running);
      // The slot table holds the limit; jobs behind (running, holding no slot row) wait beside it.
      const seen = await t.db.query<{ holders: number; behind: number }>(
        `SELECT (SELECT count(*)::integer FROM job_slots WHERE job_type = 'capped' AND holder IS NOT NULL) AS holders,
                (SELECT count(*)::integer FROM jobs j WHERE j.job_type = 'capped' AND j.status = 'running'
                   AND j.started_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM job_slots s WHERE s.holder = j.id)) AS behind`,
      );
      mostHolders = Math.max(mostHolders, seen.rows[0]!.holders);
      mostBehind = Math.max(mostBehind, seen.rows[0]!.behind);
      await new Promise((r) => setTimeout(r, Math.random() * 15));
      running--;
    };
    const executor = new AwsExecutor({
      tracker,
      dispatcher: new JobDispatcher(tracker.registry, undefined),
      jobType: 'capped',
      log: silent,
    });
    // Twelve claimers at once, as fetch-ready runs would, each invoking an executor for what it claims,
    // while the executors run the type's next jobs (and those behind them) as long as any is due.
    const runs: Promise<unknown>[] = [];
    const open = async () =>
      (
        await t.db.query<{ n: number }>(
          "SELECT count(*)::integer AS n FROM jobs WHERE job_type = 'capped' AND status <> 'completed'",
        )
      ).rows[0]!.n;
    const claimer = async () => {
      for (let i = 0; i < 30; i++) {
        const claimed = await tracker.fetchReady(2, { jobType: 'capped' });
        for (const j of claimed)
          runs.push(executor.run({ jobId: j.id, attempt: j.attempts }, () => 3_600_000));
        await new Promise((r) => setTimeout(r, 2));
      }
    };
    await Promise.all(Array.from({ length: 12 }, claimer));
    await Promise.all(runs);
    while ((await open()) > 0) {
      const claimed = await tracker.fetchReady(3, { jobType: 'capped' });
      await Promise.all(
        claimed.map((j) => executor.run({ jobId: j.id, attempt: j.attempts }, () => 3_600_000)),
      );
    }
    expect(most).toBeLessThanOrEqual(3);
    expect(mostHolders).toBeLessThanOrEqual(3);
    // Jobs did wait behind others.
    expect(mostBehind).toBeGreaterThan(0);
    expect([...ran.values()].every((n) => n === 1)).toBe(true);
    expect(ran.size).toBe(60);
  });
});
