import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test, vi } from 'vitest';
import { z } from 'zod';
import { PgDatabase } from '../../shared/db/pg-driver.js';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { RetryJobLater } from '../../shared/jobs/errors.js';
import { warmUpInsertSql } from '../../shared/jobs/sql.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { type AttemptEvent, Worker, type WorkerOptions } from '../../shared/runtime/worker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import {
  createCoreRegistry,
  deferred,
  executionRows,
  MINUTE,
  sleep,
  statusCounts,
  waitFor,
} from '../support/lifecycle.js';
import type { TestServices } from '../support/test-job-types.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_execution_records');
  gauge.now = 0;
  gauge.max = 0;
});

/** When each `stubborn` executor returned, had it returned (ms since the epoch). */
const stubbornStopped: number[] = [];

/** How many `sleepy` executors run at once, and the most seen. */
const gauge = { now: 0, max: 0 };

/** The core test types plus `sleepy`: sleeps `ms`, honouring its abort signal. */
function registry() {
  return createCoreRegistry()
    .register({
      type: 'sleepy',
      description: 'sleeps ms, honouring its abort signal',
      schema: z.object({ ms: z.number().int(), n: z.number().int().optional() }),
      timeoutSeconds: 30,
      execute: async (payload, ctx) => {
        ctx.services.runs.push({ type: 'sleepy', payload, attempt: ctx.attempt });
        gauge.now++;
        gauge.max = Math.max(gauge.max, gauge.now);
        try {
          await new Promise<void>((resolve, reject) => {
            const timer = setTimeout(resolve, payload.ms);
            ctx.signal.addEventListener('abort', () => {
              clearTimeout(timer);
              reject(ctx.signal.reason);
            });
          });
        } finally {
          gauge.now--;
        }
        return undefined;
      },
    })
    .register({
      type: 'stubborn',
      description: 'sleeps ms; on its abort signal stops after stopMs, or never if not given',
      schema: z.object({ ms: z.number().int(), stopMs: z.number().int().optional() }),
      timeoutSeconds: 30,
      execute: async (payload, ctx) => {
        ctx.services.runs.push({ type: 'stubborn', payload, attempt: ctx.attempt });
        try {
          await new Promise<void>((resolve, reject) => {
            setTimeout(resolve, payload.ms);
            const { stopMs } = payload;
            if (stopMs !== undefined)
              ctx.signal.addEventListener('abort', () => setTimeout(() => reject(ctx.signal.reason), stopMs));
          });
        } finally {
          stubbornStopped.push(Date.now());
        }
        return undefined;
      },
    })
    .register({
      type: 'later-once',
      description: 'asks to be run again in `ms` on its first attempt, then succeeds',
      schema: z.object({ ms: z.number().int() }),
      execute: async (payload, ctx) => {
        ctx.services.runs.push({ type: 'later-once', payload, attempt: ctx.attempt });
        return ctx.attempt === 1
          ? new RetryJobLater(new Date(Date.now() + payload.ms), 'not yet')
          : undefined;
      },
    });
}

type Reg = ReturnType<typeof registry>;
const workers: Worker<Reg['schemas'], TestServices>[] = [];
afterEach(async () => {
  // A failed test must not leave a worker claiming in the next one.
  for (const w of workers.splice(0)) await w.stop();
  vi.restoreAllMocks();
});

function make(
  options: Omit<WorkerOptions<Reg['schemas'], TestServices>, 'tracker' | 'dispatcher'> = {},
  clock?: ManualClock,
) {
  const reg = registry();
  const services: TestServices = { runs: [] };
  const tracker = new JobTracker({ db: t.db, registry: reg, clock });
  const worker = new Worker({ tracker, dispatcher: new JobDispatcher(reg, services), ...options });
  workers.push(worker);
  return { tracker, worker, services };
}

/**
 * A tracker of "another process": same database and types, no worker attached, so what it enqueues goes
 * through the queue (NOTIFY, claim) rather than a worker's eager start.
 */
const otherProcess = () => new JobTracker({ db: t.db, registry: registry() });

/** Holds the worker's claims until `release()`: a claim in flight, as a poll or a first claim is. */
function holdClaims(tracker: JobTracker<Reg['schemas'], TestServices>) {
  const answer = deferred();
  const realClaim = tracker.claimForWorker.bind(tracker);
  const claims = vi.spyOn(tracker, 'claimForWorker').mockImplementation(async (limit) => {
    await answer.promise;
    return realClaim(limit);
  });
  return { claims, release: answer.resolve };
}

const sleepyJobs = (count: number, ms: number) =>
  Array.from({ length: count }, (_, n) => ({ type: 'sleepy' as const, payload: { ms, n } }));

describe('running jobs', () => {
  test('drains a backlog: claims in batches, runs within the concurrency limit, completes in batches', async () => {
    const { tracker, worker } = make({ concurrency: 4, claimBatchSize: 25 });
    const claims = vi.spyOn(tracker, 'claimForWorker');
    const completions = vi.spyOn(tracker, 'completeMany');
    await tracker.enqueueMany(sleepyJobs(300, 2));
    await worker.start();
    await worker.idle();
    await worker.stop();
    expect(await statusCounts(t.db)).toEqual({ completed: 300 });
    // Claims: one statement per batch of at most claimBatchSize.
    const claimLimits = claims.mock.calls.map(([limit]) => limit);
    expect(Math.max(...claimLimits)).toBeLessThanOrEqual(25);
    expect(claims.mock.calls.length).toBeLessThan(300 / 4);
    // Concurrency: never more than 4 executors at once, and it did use them.
    expect(gauge.max).toBe(4);
    // Completions: batched (fewer statements than jobs), every job recorded once.
    const completedSizes = completions.mock.calls.map(([items]) => items.length);
    expect(completedSizes.reduce((a, b) => a + b, 0)).toBe(300);
    expect(Math.max(...completedSizes)).toBeGreaterThan(1);
    const executions = await executionRows(t.db);
    expect(executions).toHaveLength(300);
    expect(executions.every((e) => e.outcome === 'completed' && e.attempt === 1)).toBe(true);
  });

  test('claim-ahead: slow jobs lease only what the slots need, fast jobs are claimed before the queue runs dry', async () => {
    // Slow: 20 ms jobs. A claim asks for at most claimBatchSize, and only for the room left under the
    // claim-ahead mark plus one claim (each at most claimBatchSize; the mark grows with the claim's round
    // trip, so a slow database raises it): the worker never holds more than twice claimBatchSize claimed
    // jobs (queued or running), far from the 24 waiting.
    const slow = make({ concurrency: 2, claimBatchSize: 4 });
    await slow.tracker.enqueueMany(sleepyJobs(24, 20));
    let mostRunning = 0;
    const sampler = setInterval(() => {
      const { queued, running } = slow.worker.stats;
      mostRunning = Math.max(mostRunning, queued + running);
    }, 1);
    await slow.worker.start();
    await slow.worker.idle();
    clearInterval(sampler);
    expect(mostRunning).toBeGreaterThan(0);
    expect(mostRunning).toBeLessThanOrEqual(2 * 4);
    await slow.worker.stop();

    // Fast: no-op jobs. Claims are asked for before the local queue empties, so (after the first) most
    // claims find the slots still busy with the previous batch rather than idle.
    await t.db.query('TRUNCATE jobs, job_execution_records');
    const fast = make({ concurrency: 4, claimBatchSize: 100 });
    await fast.tracker.enqueueMany(
      Array.from({ length: 2000 }, (_, n) => ({ type: 'noop' as const, payload: { n } })),
    );
    const queuedAtClaim: number[] = [];
    const claimForWorker = fast.tracker.claimForWorker.bind(fast.tracker);
    vi.spyOn(fast.tracker, 'claimForWorker').mockImplementation((limit) => {
      queuedAtClaim.push(fast.worker.stats.queued);
      return claimForWorker(limit);
    });
    await fast.worker.start();
    await fast.worker.idle();
    expect(await statusCounts(t.db)).toEqual({ completed: 2000 });
    // Every claim is bounded by the batch size; some started with more than `concurrency` jobs still queued.
    expect(queuedAtClaim.some((q) => q > 4)).toBe(true);
  });

  test('slow jobs are shared between workers: neither claims the backlog its slots cannot start soon', async () => {
    const a = make({ concurrency: 2, claimBatchSize: 100 });
    const b = make({ concurrency: 2, claimBatchSize: 100 });
    // 250 ms jobs on two slots: a worker gets through about 8 a second, so it claims about that many.
    await a.tracker.enqueueMany(sleepyJobs(20, 250));
    await a.worker.start();
    await sleep(30); // a has claimed and started first
    await b.worker.start();
    await waitFor(async () => (await statusCounts(t.db)).completed === 20, { timeoutMs: 15_000 });
    // With a fixed batch of 100, `a` would have taken all 20 at once and `b` run none.
    expect(a.services.runs.length).toBeGreaterThanOrEqual(5);
    expect(b.services.runs.length).toBeGreaterThanOrEqual(5);
    expect(a.services.runs.length + b.services.runs.length).toBe(20);
  });

  test('an idle worker is woken by LISTEN/NOTIFY long before its poll interval', async () => {
    const tracker = otherProcess();
    const {
      worker,
      services,
      tracker: workerTracker,
    } = make({
      pollIntervalMs: 120_000,
      listen: (onNotify) => t.db.listen('lana_jobs', onNotify),
    });
    const claims = vi.spyOn(workerTracker, 'claimForWorker');
    const asksWhenDue = vi.spyOn(workerTracker, 'nextDueAt');
    await worker.start();
    await worker.idle();
    await sleep(50); // asleep: the next poll is two minutes away
    const enqueuedAt = Date.now();
    await tracker.enqueue({ type: 'sleepy', payload: { ms: 0, n: 1 } });
    // Well before the poll interval (a generous bound, not a performance assertion).
    await waitFor(() => services.runs.length === 1, { timeoutMs: 20_000, what: 'the notified job to run' });
    expect(Date.now() - enqueuedAt).toBeLessThan(60_000);
    await worker.idle();
    expect(await statusCounts(t.db)).toEqual({ completed: 1 });
    // Each short claim said how long the worker may sleep: no second statement to ask.
    expect(claims.mock.calls.length).toBeGreaterThanOrEqual(2);
    expect(asksWhenDue).not.toHaveBeenCalled();
  });

  test('a job enqueued to run in a moment starts on time, not at the next poll', async () => {
    const { tracker, worker, services } = make({
      pollIntervalMs: 120_000,
      listen: (onNotify) => t.db.listen('lana_jobs', onNotify),
    });
    await worker.start();
    await worker.idle();
    await sleep(50); // asleep: the next poll is two minutes away
    const runAt = new Date(Date.now() + 400);
    await tracker.enqueue({ type: 'sleepy', payload: { ms: 0, n: 1 }, runAt });
    await waitFor(() => services.runs.length === 1, { timeoutMs: 20_000, what: 'the job to run' });
    const startedAt = Date.now();
    expect(startedAt).toBeGreaterThanOrEqual(runAt.getTime());
    expect(startedAt - runAt.getTime()).toBeLessThan(60_000); // generous: well before the poll
  });

  test('a retry the executor asks for in a moment runs then, not at the next poll', async () => {
    const { tracker, worker, services } = make({ pollIntervalMs: 120_000 });
    await tracker.enqueue({ type: 'later-once', payload: { ms: 300 } });
    await worker.start();
    await waitFor(() => services.runs.length === 2, { timeoutMs: 20_000, what: 'the second attempt' });
    await worker.idle();
    expect(await statusCounts(t.db)).toEqual({ completed: 1 });
  });

  test('without LISTEN, the poll picks new jobs up', async () => {
    const tracker = otherProcess();
    const { worker, services } = make({ pollIntervalMs: 100 });
    await worker.start();
    await worker.idle();
    await tracker.enqueue({ type: 'sleepy', payload: { ms: 0 } });
    await waitFor(() => services.runs.length === 1, { what: 'the poll to claim the job' });
    await worker.idle();
    expect(await statusCounts(t.db)).toEqual({ completed: 1 });
  });

  test('results are recorded with their next run: retrying (with nextRunAt), failed, retry-later, completed', async () => {
    const clock = new ManualClock('2026-03-01T00:00:00Z');
    const events: AttemptEvent[] = [];
    const { tracker, worker } = make({ onAttemptRecorded: (e) => events.push(e) }, clock);
    const [fails, permanent, later, ok] = await tracker.enqueueMany([
      { type: 'always-fails', payload: { reason: 'boom' } },
      { type: 'permanent-fails', payload: {} },
      { type: 'retry-later', payload: { at: '2026-03-01T05:00:00.000Z' } },
      { type: 'noop', payload: {} },
    ]);
    await worker.start();
    await worker.idle();
    await worker.stop();
    const byId = new Map(events.map((e) => [e.job.id, e]));
    expect(events).toHaveLength(4);
    expect(byId.get(fails!.job.id)).toMatchObject({
      status: 'retrying',
      nextRunAt: new Date(clock.now().getTime() + 2 * MINUTE),
      result: { outcome: 'failed', error: 'boom', permanent: false },
    });
    expect(byId.get(permanent!.job.id)).toMatchObject({ status: 'failed', result: { permanent: true } });
    expect(byId.get(permanent!.job.id)!.nextRunAt).toBeUndefined();
    expect(byId.get(later!.job.id)).toMatchObject({
      status: 'retrying',
      nextRunAt: new Date('2026-03-01T05:00:00.000Z'),
    });
    expect(byId.get(ok!.job.id)).toMatchObject({ status: 'completed' });
    expect(await tracker.getJob(fails!.job.id)).toMatchObject({
      status: 'retrying',
      scheduledAt: new Date(clock.now().getTime() + 2 * MINUTE),
    });
  });

  test('rows with an unknown type or a bad payload fail at once through the worker', async () => {
    await t.db.query(
      `INSERT INTO jobs (job_type, payload) VALUES ('retired-type', '{}'), ('sleepy', '{"ms": "slow"}')`,
    );
    const { tracker, worker, services } = make();
    await worker.start();
    await worker.idle();
    await worker.stop();
    const jobs = await tracker.listJobs();
    expect(jobs.map((j) => [j.jobType, j.status, j.attempts]).sort()).toEqual([
      ['retired-type', 'failed', 1],
      ['sleepy', 'failed', 1],
    ]);
    expect(jobs.find((j) => j.jobType === 'retired-type')!.lastError).toBe('unknown job type "retired-type"');
    expect(jobs.find((j) => j.jobType === 'sleepy')!.lastError).toMatch(/payload\.ms/);
    expect(services.runs).toEqual([]);
  });

  test('the worker rescues expired leases and runs the job again', async () => {
    const clock = new ManualClock(new Date());
    const { tracker, worker, services } = make({ rescueIntervalMs: 20, pollIntervalMs: 50 }, clock);
    const { job } = await tracker.enqueue({ type: 'sleepy', payload: { ms: 0 } });
    await tracker.fetchReady(1, { startNow: true }); // a claimer that then died
    clock.advance(151_000); // past the 150 s lease (30 s timeout + 120 s)
    await worker.start();
    await waitFor(async () => (await tracker.getJob(job.id))!.status === 'retrying', { what: 'the rescue' });
    clock.advanceMinutes(2); // the 2-minute backoff
    await waitFor(() => services.runs.length === 1, { what: 'the second attempt' });
    await worker.idle();
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'completed', attempts: 2 });
    expect((await executionRows(t.db, job.id)).map((e) => e.outcome)).toEqual(['lease_expired', 'completed']);
  });
});

describe("eager start: a job enqueued in the worker's own process", () => {
  const idleWorker = async (options: Parameters<typeof make>[0] = {}) => {
    const kit = make({ pollIntervalMs: 120_000, ...options });
    await kit.worker.start();
    await kit.worker.idle();
    return kit;
  };

  test('is inserted already claimed and starts when that insert commits: no notification, no claim', async () => {
    const { tracker, worker, services } = await idleWorker();
    const claims = vi.spyOn(tracker, 'claimForWorker');
    const notifications: string[] = [];
    const unlisten = await t.db.listen('lana_jobs', () => notifications.push('woken'));
    try {
      const { job, created } = await tracker.enqueue({ type: 'sleepy', payload: { ms: 0, n: 1 } });
      expect(created).toBe(true);
      expect(job).toMatchObject({ status: 'running', attempts: 1 });
      expect(job.leaseExpiresAt!.getTime()).toBeGreaterThan(job.createdAt.getTime());
      expect(job.startedAt).toEqual(job.createdAt);
      await waitFor(() => services.runs.length === 1, { what: 'the eager job to run' });
      await worker.idle();
      expect(await statusCounts(t.db)).toEqual({ completed: 1 });
      const [execution] = await executionRows(t.db, job.id);
      expect(execution).toMatchObject({ attempt: 1, outcome: 'completed', claimed_at: job.createdAt });
      expect(claims).not.toHaveBeenCalled();
      // Another process's enqueue of a due job still wakes listeners; the eager one woke nobody.
      await sleep(100);
      expect(notifications).toEqual([]);
      await otherProcess().enqueue({ type: 'noop', payload: {} });
      await waitFor(() => notifications.length === 1, { what: 'the notification of a queued job' });
    } finally {
      await unlisten();
    }
  });

  test('answers with the job as stored: its start, lease and due time, given or not', async () => {
    const { tracker, worker } = await idleWorker();
    const runAt = new Date(Date.now() - 60_000); // in the past: due now, stored as now
    const given = await tracker.enqueue({ type: 'sleepy', payload: { ms: 0, n: 1 }, runAt });
    const defaulted = await tracker.enqueue({ type: 'sleepy', payload: { ms: 0, n: 2 } });
    await worker.idle();
    for (const { job } of [given, defaulted]) {
      expect(job.status).toBe('running');
      const stored = await tracker.getJob(job.id);
      expect(stored).toMatchObject({ createdAt: job.createdAt, scheduledAt: job.scheduledAt });
      // The executor has finished since: the lease it ran under is kept on the row.
      expect(stored!.leaseExpiresAt).toEqual(job.leaseExpiresAt);
      expect(job.leaseExpiresAt!.getTime() - job.startedAt!.getTime()).toBe(
        registry().get('sleepy')!.leaseSeconds * 1000,
      );
    }
    expect(given.job.scheduledAt).toEqual(given.job.createdAt);
    expect(defaulted.job.scheduledAt).toEqual(defaulted.job.createdAt);
  });

  test('goes through the queue when scheduled ahead, in a transaction, in a batch, with slots busy, or with eagerStart off', async () => {
    // LISTEN on: the jobs that go through the queue are claimed when their insert notifies.
    const { tracker, worker, services } = await idleWorker({
      concurrency: 1,
      listen: (onNotify) => t.db.listen('lana_jobs', onNotify),
    });
    const ahead = await tracker.enqueue({
      type: 'noop',
      payload: {},
      runAt: new Date(Date.now() + 3_600_000),
    });
    const inTransaction = await t.db.transaction((tx) =>
      tracker.enqueue({ type: 'noop', payload: {} }, { db: tx }),
    );
    const batch = await tracker.enqueueMany([
      { type: 'noop', payload: {} },
      { type: 'noop', payload: {} },
    ]);
    for (const r of [ahead, inTransaction, ...batch])
      expect(r.job).toMatchObject({ status: 'pending', attempts: 0 });
    await worker.idle();
    // One slot: a slow job takes it eagerly, the next enqueue finds it busy and queues.
    const slow = await tracker.enqueue({ type: 'sleepy', payload: { ms: 300, n: 1 } });
    expect(slow.job.status).toBe('running');
    const queued = await tracker.enqueue({ type: 'sleepy', payload: { ms: 0, n: 2 } });
    expect(queued.job.status).toBe('pending');
    await waitFor(() => services.runs.length === 5, { timeoutMs: 20_000, what: 'every due job to run' });
    await worker.idle();
    expect(await statusCounts(t.db)).toEqual({ completed: 5, pending: 1 });

    await worker.stop();
    const off = await idleWorker({ eagerStart: false });
    expect((await off.tracker.enqueue({ type: 'noop', payload: {} })).job.status).toBe('pending');
  });

  test("starts while an idle worker's poll is in flight; the poll's jobs take the other slots", async () => {
    const { tracker, worker, services } = await idleWorker({ concurrency: 2 });
    // Due, and unseen by the worker (it does not listen): its next poll finds it.
    const polled = await otherProcess().enqueue({ type: 'sleepy', payload: { ms: 0, n: 1 } });
    const poll = holdClaims(tracker);
    worker.wake(); // the poll
    try {
      await waitFor(() => poll.claims.mock.calls.length === 1, { what: 'the poll to be in flight' });
      // Before, this job waited for the poll, then for its own notification and a second claim.
      const eager = await tracker.enqueue({ type: 'sleepy', payload: { ms: 0, n: 2 } });
      expect(eager.job).toMatchObject({ status: 'running', attempts: 1 });
      await waitFor(() => services.runs.length === 1, { what: 'the eager job to run' });
    } finally {
      poll.release();
    }
    await waitFor(() => services.runs.length === 2, { what: 'the polled job to run' });
    await worker.idle();
    expect(services.runs.map((r) => r.payload)).toEqual([
      { ms: 0, n: 2 },
      { ms: 0, n: 1 },
    ]);
    expect(await tracker.getJob(polled.job.id)).toMatchObject({ status: 'completed', attempts: 1 });
    expect(await statusCounts(t.db)).toEqual({ completed: 2 });
  });

  test('a starting worker takes no eager job before its first claim answers: it may have a backlog', async () => {
    const { tracker, worker, services } = make({ pollIntervalMs: 120_000 });
    const first = holdClaims(tracker);
    await worker.start();
    try {
      await waitFor(() => first.claims.mock.calls.length === 1, {
        what: 'the first claim to be in flight',
      });
      const queued = await tracker.enqueue({ type: 'sleepy', payload: { ms: 0, n: 1 } });
      expect(queued.job).toMatchObject({ status: 'pending', attempts: 0 });
    } finally {
      first.release();
    }
    await worker.idle();
    expect(services.runs).toHaveLength(1);
    // Caught up now: the next one starts eagerly.
    expect((await tracker.enqueue({ type: 'sleepy', payload: { ms: 0, n: 2 } })).job.status).toBe('running');
    await worker.idle();
    expect(services.runs).toHaveLength(2);
  });

  test('start() readies two sessions for the insert path, writing nothing and waking nobody', async () => {
    const db = new PgDatabase({ connectionString: t.url });
    const notifications: string[] = [];
    const unlisten = await t.db.listen('lana_jobs', () => notifications.push('woken'));
    try {
      const reg = registry();
      const tracker = new JobTracker({ db, registry: reg });
      const statements = vi.spyOn(db, 'query');
      const worker = new Worker({
        tracker,
        dispatcher: new JobDispatcher(reg, { runs: [] } as TestServices),
      });
      workers.push(worker);
      await worker.start();
      await worker.idle();
      expect(statements.mock.calls.filter(([text]) => text === warmUpInsertSql)).toHaveLength(2);
      expect(db.pool.totalCount).toBe(2); // issued together: one on each of two sessions
      await worker.stop();
      // The warm-up takes no transaction id: no row, no WAL, nothing for a listener.
      const xid = await db.transaction(async (tx) => {
        await tx.query(warmUpInsertSql);
        return (
          await tx.query<{ xid: string | null }>('SELECT pg_current_xact_id_if_assigned()::text AS xid')
        ).rows[0]!.xid;
      });
      expect(xid).toBeNull();
      await sleep(100);
      expect(notifications).toEqual([]);
      expect(await statusCounts(t.db)).toEqual({});
    } finally {
      await unlisten();
      await db.close();
    }
  });

  test('a key already taken returns the existing job and starts nothing', async () => {
    const { tracker, worker, services } = await idleWorker();
    const first = await tracker.enqueue({ type: 'sleepy', payload: { ms: 0, n: 1 }, idempotencyKey: 'k' });
    expect(first).toMatchObject({ created: true, job: { status: 'running' } });
    await worker.idle();
    const again = await tracker.enqueue({ type: 'sleepy', payload: { ms: 0, n: 2 }, idempotencyKey: 'k' });
    expect(again).toMatchObject({ created: false, job: { id: first.job.id, status: 'completed' } });
    await worker.idle();
    expect(services.runs).toHaveLength(1);
    expect(worker.stats).toEqual({ queued: 0, running: 0, unrecorded: 0 });
  });

  test('an insert that fails frees the slot and writes nothing', async () => {
    const { tracker, worker, services } = await idleWorker({ concurrency: 1 });
    const realQuery = t.db.query.bind(t.db);
    vi.spyOn(t.db, 'query').mockImplementationOnce(async () => {
      throw new Error('connection lost');
    });
    await expect(tracker.enqueue({ type: 'sleepy', payload: { ms: 0, n: 1 } })).rejects.toThrow(
      /connection lost/,
    );
    vi.mocked(t.db.query).mockImplementation(realQuery);
    expect(await statusCounts(t.db)).toEqual({});
    // The one slot is free again: the next enqueue starts eagerly.
    expect((await tracker.enqueue({ type: 'sleepy', payload: { ms: 0, n: 2 } })).job.status).toBe('running');
    await worker.idle();
    expect(services.runs).toHaveLength(1);
  });

  test('stop() while an eager insert is in flight hands the job back before it returns', async () => {
    const { tracker, worker, services } = await idleWorker();
    const committed = deferred();
    const answer = deferred();
    const realQuery = t.db.query.bind(t.db);
    vi.spyOn(t.db, 'query').mockImplementation(async (text, params) => {
      const res = await realQuery(text, params);
      if (text.includes("'running', 1")) {
        committed.resolve();
        await answer.promise;
      }
      return res as never;
    });
    const enqueued = tracker.enqueue({ type: 'sleepy', payload: { ms: 0, n: 1 } });
    await committed.promise;
    expect(await statusCounts(t.db)).toEqual({ running: 1 });
    const stopping = worker.stop();
    await sleep(20);
    answer.resolve();
    await enqueued;
    await stopping;
    expect(await statusCounts(t.db)).toEqual({ pending: 1 });
    expect(services.runs).toEqual([]);
    expect(await executionRows(t.db)).toMatchObject([{ attempt: 1, outcome: 'released' }]);
  });
});

describe('graceful stop', () => {
  test('running jobs finish within the grace period; queued ones are released uncounted; nothing stays running', async () => {
    const { tracker, worker, services } = make({ concurrency: 2, claimBatchSize: 10, shutdownGraceMs: 5000 });
    await tracker.enqueueMany(sleepyJobs(6, 300));
    await worker.start();
    // The worker claims what its slots will start soon: two running, at least one more queued.
    await waitFor(() => services.runs.length === 2 && worker.stats.queued > 0, {
      what: 'two jobs running, more queued',
    });
    const queued = worker.stats.queued;
    expect(worker.stats.running).toBe(2);
    await worker.stop();
    expect(await statusCounts(t.db)).toEqual({ completed: 2, pending: 4 });
    expect(services.runs).toHaveLength(2); // stop started nothing new
    const executions = await executionRows(t.db);
    expect(executions.filter((e) => e.outcome === 'completed')).toHaveLength(2);
    expect(executions.filter((e) => e.outcome === 'released')).toHaveLength(queued);
    // The released attempt does not count: each keeps a full budget of 6 real attempts.
    const released = await t.db.query<{ attempts: number; max_attempts: number; attempt_offset: number }>(
      "SELECT DISTINCT attempts, max_attempts, attempt_offset FROM jobs WHERE status = 'pending' AND attempts > 0",
    );
    expect(released.rows).toEqual([{ attempts: 1, max_attempts: 7, attempt_offset: 1 }]);
    // And they are claimable at once.
    expect(await tracker.fetchReady(10)).toHaveLength(4);
  });

  test('a job still running after the grace period is interrupted and due again at once', async () => {
    const { tracker, worker, services } = make({ shutdownGraceMs: 200 });
    const { job } = await tracker.enqueue({ type: 'sleepy', payload: { ms: 30_000 } });
    await worker.start();
    await waitFor(() => services.runs.length === 1, { what: 'the slow job to start' });
    await worker.stop();
    const row = await tracker.getJob(job.id);
    // Interrupted by the shutdown, not failed by the job: the attempt does not count.
    expect(row).toMatchObject({
      status: 'retrying',
      attempts: 1,
      maxAttempts: 7,
      lastError: expect.stringMatching(/interrupted/),
    });
    expect(row!.scheduledAt.getTime()).toBeLessThanOrEqual(Date.now());
    expect(await statusCounts(t.db)).toEqual({ retrying: 1 });
    expect(await executionRows(t.db, job.id)).toEqual([
      expect.objectContaining({
        attempt: 1,
        outcome: 'interrupted',
        error: expect.stringMatching(/interrupted/),
      }),
    ]);
    expect((await tracker.fetchReady(1)).map((j) => j.id)).toEqual([job.id]);
  });

  test('an interrupted job is due again only once its executor has stopped', async () => {
    const { tracker, worker } = make({ shutdownGraceMs: 100 });
    stubbornStopped.length = 0;
    const { job } = await tracker.enqueue({ type: 'stubborn', payload: { ms: 30_000, stopMs: 60 } });
    await worker.start();
    await waitFor(() => worker.stats.running === 1, { what: 'the job to start' });
    await worker.stop();
    expect(stubbornStopped).toHaveLength(1);
    const [execution] = await executionRows(t.db, job.id);
    expect(execution).toMatchObject({ attempt: 1, outcome: 'interrupted' });
    expect(execution!.finished_at.getTime()).toBeGreaterThanOrEqual(stubbornStopped[0]!);
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'retrying', attempts: 1 });
  });

  test('an executor that ignores its abort signal leaves its job running for the rescuer, not due at once', async () => {
    const { tracker, worker } = make({ shutdownGraceMs: 100 });
    stubbornStopped.length = 0;
    const { job } = await tracker.enqueue({ type: 'stubborn', payload: { ms: 700 } });
    await worker.start();
    await waitFor(() => worker.stats.running === 1, { what: 'the job to start' });
    const claimed = await tracker.getJob(job.id);
    await worker.stop(); // the grace, then as long again for the interrupted executor to stop
    expect(stubbornStopped).toEqual([]); // it is still running
    const left = await tracker.getJob(job.id);
    expect(left).toMatchObject({ status: 'running', attempts: 1, leaseExpiresAt: claimed!.leaseExpiresAt });
    expect(left!.leaseExpiresAt!.getTime()).toBeGreaterThan(Date.now());
    expect(await executionRows(t.db, job.id)).toEqual([]);
    // No other worker can take it beside the executor that is still running.
    expect(await tracker.fetchReady(10)).toEqual([]);
    // When that executor does return, the stopped worker records nothing: the job waits for its lease.
    await waitFor(() => stubbornStopped.length === 1, { what: 'the stubborn executor to return' });
    await sleep(100);
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'running', attempts: 1 });
    expect(await executionRows(t.db, job.id)).toEqual([]);
    // Once the lease has expired, the rescuer hands it out again, counting the lost attempt.
    const later = new ManualClock(new Date(left!.leaseExpiresAt!.getTime() + 1000));
    const rescuer = new JobTracker({ db: t.db, registry: registry(), clock: later });
    expect(await rescuer.rescueExpiredLeases()).toHaveLength(1);
    expect(await executionRows(t.db, job.id)).toEqual([
      expect.objectContaining({ attempt: 1, outcome: 'lease_expired' }),
    ]);
  });

  test('a job interrupted on its last attempt is not failed by the shutdown', async () => {
    const { tracker, worker, services } = make({ shutdownGraceMs: 100 });
    const { job } = await tracker.enqueue({ type: 'sleepy', payload: { ms: 30_000 }, maxAttempts: 1 });
    await worker.start();
    await waitFor(() => services.runs.length === 1, { what: 'the slow job to start' });
    await worker.stop();
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'retrying', attempts: 1, maxAttempts: 2 });
  });

  test('a claim in flight when stop() is called is handed back before stop() returns', async () => {
    // A claim asks for at least `concurrency` jobs: three slots, so the claim takes all three.
    const { tracker, worker, services } = make({ concurrency: 3, claimBatchSize: 5, pollIntervalMs: 60_000 });
    await worker.start();
    await worker.idle();
    // The next claim commits, then its answer is slow to arrive; releasing is slow too.
    const claimCommitted = deferred();
    const answer = deferred();
    const realClaim = tracker.claimForWorker.bind(tracker);
    vi.spyOn(tracker, 'claimForWorker').mockImplementation(async (limit) => {
      const claimed = await realClaim(limit);
      claimCommitted.resolve();
      await answer.promise;
      return claimed;
    });
    const realRelease = tracker.release.bind(tracker);
    vi.spyOn(tracker, 'release').mockImplementation(async (items, options) => {
      await sleep(300);
      return realRelease(items, options);
    });
    await tracker.enqueueMany(sleepyJobs(3, 0));
    worker.wake();
    await claimCommitted.promise;
    expect(await statusCounts(t.db)).toEqual({ running: 3 });
    const stopping = worker.stop();
    await sleep(20);
    answer.resolve();
    await stopping;
    expect(await statusCounts(t.db)).toEqual({ pending: 3 });
    expect(services.runs).toEqual([]);
  });

  test('kill() during a recording that then fails: a dead process retries nothing, its lease expires', async () => {
    const { tracker, worker, services } = make({ pollIntervalMs: 120_000 });
    const inFlight = deferred();
    const fail = deferred();
    const recordings = vi.spyOn(tracker, 'completeMany').mockImplementation(async () => {
      inFlight.resolve();
      await fail.promise;
      throw new Error('database unreachable');
    });
    await tracker.enqueueMany(sleepyJobs(1, 0));
    await worker.start();
    await inFlight.promise;
    await worker.kill();
    fail.resolve();
    await sleep(800); // longer than the first retry backoff (250 ms)
    expect(recordings).toHaveBeenCalledTimes(1);
    expect(services.runs).toHaveLength(1);
    expect(await statusCounts(t.db)).toEqual({ running: 1 });
  });

  test('stop() before start() and a second stop() are harmless', async () => {
    const { tracker, worker } = make();
    await worker.stop();
    await tracker.enqueue({ type: 'noop', payload: {} });
    await worker.start();
    await worker.idle();
    await worker.stop();
    await worker.stop();
    await expect(worker.start()).rejects.toThrow(/already started/);
    expect(await statusCounts(t.db)).toEqual({ completed: 1 });
  });
});

describe('job types with a concurrency limit (every type the product ships has one)', () => {
  /** The core types plus `sleepy` limited to `limit` at once. */
  function limitedKit(
    limit: number,
    options: Omit<WorkerOptions<never, TestServices>, 'tracker' | 'dispatcher'>,
  ) {
    const reg = createCoreRegistry().register({
      type: 'sleepy',
      description: 'sleeps ms, limited',
      schema: z.object({ ms: z.number().int(), n: z.number().int().optional() }),
      concurrency: limit,
      timeoutSeconds: 30,
      execute: async (payload) => {
        gauge.now++;
        gauge.max = Math.max(gauge.max, gauge.now);
        await sleep(payload.ms);
        gauge.now--;
        return undefined;
      },
    });
    const tracker = new JobTracker({ db: t.db, registry: reg });
    const worker = new Worker({ tracker, dispatcher: new JobDispatcher(reg, { runs: [] }), ...options });
    return { tracker, worker };
  }

  test('a limit equal to the concurrency drains as no limit does: claims in batches, never a poll', async () => {
    const { tracker, worker } = limitedKit(4, {
      concurrency: 4,
      claimBatchSize: 25,
      pollIntervalMs: 3_600_000,
    });
    const claims = vi.spyOn(tracker, 'claimForWorker');
    await tracker.enqueueMany(sleepyJobs(300, 2));
    await worker.start();
    await worker.idle();
    await worker.stop();
    expect(await statusCounts(t.db)).toEqual({ completed: 300 });
    const claimLimits = claims.mock.calls.map(([limit]) => limit);
    expect(Math.max(...claimLimits)).toBeLessThanOrEqual(25);
    expect(claims.mock.calls.length).toBeLessThan(300 / 4);
    expect(gauge.max).toBe(4);
  });

  test('a limit below the concurrency holds across the whole run while other types flow beside it', async () => {
    const { tracker, worker } = limitedKit(2, { concurrency: 6, pollIntervalMs: 3_600_000 });
    await tracker.enqueueMany(sleepyJobs(20, 15));
    await tracker.enqueueMany(
      Array.from({ length: 40 }, (_, n) => ({ type: 'noop' as const, payload: { n } })),
    );
    await worker.start();
    await worker.idle();
    await worker.stop();
    expect(await statusCounts(t.db)).toEqual({ completed: 60 });
    expect(gauge.max).toBe(2);
  });

  test('stop gives every slot back and hands queued jobs back uncounted', async () => {
    const { tracker, worker } = limitedKit(3, { concurrency: 3, claimBatchSize: 30 });
    await tracker.enqueueMany(sleepyJobs(30, 40));
    await worker.start();
    await waitFor(() => gauge.now === 3);
    await worker.stop();
    const slots = await t.db.query('SELECT job_type, slot FROM job_slots WHERE holder IS NOT NULL');
    expect(slots.rows).toEqual([]);
    // The three that ran completed; the claimed-ahead ones went back uncounted, due at once.
    expect(await statusCounts(t.db)).toEqual({ completed: 3, pending: 27 });
    const released = await t.db.query<{ n: number }>(
      "SELECT count(*)::integer AS n FROM job_executions WHERE outcome = 'released'",
    );
    expect(released.rows[0]!.n).toBeGreaterThan(0);
  });
});
