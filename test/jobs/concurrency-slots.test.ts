import type { Context } from 'aws-lambda';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { z } from 'zod';
import { createExecutorHandler } from '../../functions/executor/handler.js';
import { createObservability } from '../../functions/lib/powertools.js';
import type { JobRuntime, LendingDispatcher } from '../../functions/lib/runtime.js';
import { fanOutDueJobs, type JobPublisher } from '../../shared/aws/fetch-ready.js';
import type { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import type { Database } from '../../shared/db/port.js';
import { MAX_HANDBACKS } from '../../shared/jobs/attempts.js';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { DISPATCH_LEASE_SECONDS, JobTypeRegistry } from '../../shared/jobs/registry.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { Worker } from '../../shared/runtime/worker.js';
import { type DataApiFixture, dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * Concurrency limits kept by slot rows (migration 0013): a limited type's claim never waits for another
 * claim, of its type or any other; a local worker holding a type's slots claims its jobs again as soon as
 * it finishes them, with no poll; a claim no executor begins is handed back a bounded number of times, and
 * a type whose claims keep coming back undelivered gets one probe at a time; an executor's next job holds
 * only a dispatch lease until the executor begins it.
 */
function registry(onRun?: (type: string) => Promise<void> | void) {
  const execute = (type: string) => async (): Promise<undefined> => {
    await onRun?.(type);
    return undefined;
  };
  return new JobTypeRegistry()
    .register({
      type: 'alpha',
      description: 'limited',
      schema: z.object({ n: z.number().int() }),
      concurrency: 3,
      timeoutSeconds: 60,
      execute: execute('alpha'),
    })
    .register({
      type: 'beta',
      description: 'limited',
      schema: z.object({ n: z.number().int() }),
      concurrency: 2,
      timeoutSeconds: 60,
      execute: execute('beta'),
    });
}
type Registry = ReturnType<typeof registry>;

let t: TestDatabase;
let fixture: DataApiFixture;
let dataApi: DataApiDatabase;
let clock: ManualClock;

beforeAll(async () => {
  t = await createTestDatabase({ poolSize: 8 });
  fixture = await startDataApiFixture(t.url);
  dataApi = dataApiDriverOver(fixture, t.name);
});
afterAll(async () => {
  await dataApi?.close();
  await fixture?.close();
  await t?.drop();
});
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_execution_records CASCADE');
  clock = new ManualClock('2026-06-01T00:00:00Z');
});

const trackerOver = (db: Database, withClock = true) =>
  new JobTracker({ db, registry: registry(), ...(withClock ? { clock } : {}) });

async function enqueue(tracker: JobTracker<Registry['schemas']>, type: 'alpha' | 'beta', n: number) {
  await tracker.enqueueMany(Array.from({ length: n }, (_, i) => ({ type, payload: { n: i } })));
}

async function statusOf(id: string) {
  const r = await t.db.query<{ status: string; attempts: number; max_attempts: number; handbacks: number }>(
    'SELECT status, attempts, max_attempts, handbacks FROM jobs WHERE id = :id',
    { id },
  );
  return r.rows[0]!;
}

/** A session holding `type`'s slots mid-claim (its transaction open): a stalled claimer. */
async function stallHolderOf(type: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: t.url });
  await c.connect();
  await c.query('BEGIN');
  await c.query(
    `SELECT count(*) FROM lana_jobs_claim_slotted($1::jsonb, $2, 100, now(), false, 90, NULL, NULL, NULL, NULL, NULL)`,
    [JSON.stringify({ alpha: 3, beta: 2 }), type],
  );
  return c;
}

describe.each([
  ['node-postgres', () => t.db],
  ['Data API', () => dataApi],
])('an eager start that takes a slot (%s)', (_name, db) => {
  test('takes a free slot for its worker with the job, or writes nothing and the job is queued', async () => {
    const worker = '00000000-0000-7000-8000-0000000000e1';
    const tracker = trackerOver(db(), false);
    expect(await tracker.fetchReady(1)).toEqual([]); // the first claim makes the slot rows
    const started: string[] = [];
    let cancelled = 0;
    const detach = tracker.attachEagerStarter({
      reserve: () => ({
        takeSlotFor: worker,
        start: (job) => started.push(job.id),
        cancel: () => cancelled++,
      }),
    });
    try {
      // beta has two slots: one job each, begun as its insert commits.
      const a = await tracker.enqueue({ type: 'beta', payload: { n: 0 } });
      const b = await tracker.enqueue({ type: 'beta', payload: { n: 1 } });
      expect([a.job.status, b.job.status]).toEqual(['running', 'running']);
      expect(started).toEqual([a.job.id, b.job.id]);
      expect(await holders('beta')).toEqual([worker, worker]);
      // None free: nothing taken, the job queued uncounted.
      const c = await tracker.enqueue({ type: 'beta', payload: { n: 2 } });
      expect(c.job).toMatchObject({ status: 'pending', attempts: 0 });
      expect(cancelled).toBe(1);
      expect(await holders('beta')).toEqual([worker, worker]);
    } finally {
      detach();
      await t.db.query("UPDATE job_slots SET holder = NULL, expires_at = NULL WHERE job_type = 'beta'");
    }
  });
});

describe.each([
  ['node-postgres', () => t.db],
  ['Data API', () => dataApi],
])('no claim waits for another (%s)', (_name, db) => {
  test("a stalled holder of one type's slots delays no claim of another type", async () => {
    const tracker = trackerOver(db(), false);
    // The first claim makes the slot rows.
    expect(await tracker.fetchReady(1)).toEqual([]);
    await enqueue(tracker, 'alpha', 5);
    await enqueue(tracker, 'beta', 4);
    // The holder locked alpha's jobs and slots and stalls with them.
    const holder = await stallHolderOf('alpha');
    try {
      const started = performance.now();
      const claimed = await tracker.fetchReady(30);
      const ms = performance.now() - started;
      // The all-types claim passed over alpha's held slots and took beta's free ones, without waiting.
      expect(claimed.map((j) => j.jobType)).toEqual(['beta', 'beta']);
      expect(ms).toBeLessThan(3000);
      // A claim of alpha alone finds its slots taken and answers at once, empty.
      expect(await tracker.fetchReady(5, { jobType: 'alpha' })).toEqual([]);
    } finally {
      await holder.query('ROLLBACK');
      await holder.end();
    }
    // The holder gave up: alpha's slots are free again.
    expect(await tracker.fetchReady(30, { jobType: 'alpha' })).toHaveLength(3);
  });

  test("an executor's report hands its slot to the type's next job in the same statement", async () => {
    const tracker = trackerOver(db());
    await enqueue(tracker, 'beta', 3);
    // Both of beta's slots are held: only the slot the report frees can take the next job.
    const held = await tracker.fetchReady(2, { startNow: true, jobType: 'beta' });
    expect(held).toHaveLength(2);
    const { completed, next } = await tracker.completeAndClaimNext(
      { id: held[0]!.id, attempt: held[0]!.attempts, durationMs: 1 },
      'beta',
    );
    expect(completed).toBe(true);
    expect(next).not.toBeNull();
    const slots = await t.db.query<{ holder: string | null }>(
      "SELECT holder::text FROM job_slots WHERE job_type = 'beta' ORDER BY holder",
    );
    expect(slots.rows.map((r) => r.holder).sort()).toEqual([held[1]!.id, next!.id].sort());
    // When the last job ends, its slot is free again.
    await tracker.completeMany([{ id: next!.id, attempt: next!.attempts }]);
    const free = await t.db.query<{ n: number }>(
      "SELECT count(*)::integer AS n FROM job_slots WHERE job_type = 'beta' AND holder IS NULL",
    );
    expect(free.rows[0]!.n).toBe(1);
  });

  test('claimers of one type take different slots side by side', async () => {
    const tracker = trackerOver(db());
    await enqueue(tracker, 'alpha', 6);
    const both = await Promise.all([tracker.fetchReady(2), tracker.fetchReady(2)]);
    const slots = await t.db.query<{ slot: number }>(
      "SELECT slot FROM jobs WHERE status = 'running' ORDER BY slot",
    );
    expect(both.flat()).toHaveLength(3);
    expect(slots.rows.map((r) => r.slot)).toEqual([0, 1, 2]);
  });
});

describe('a claim that no executor begins', () => {
  test(`is handed back uncounted at most ${MAX_HANDBACKS} times, then fails as never delivered`, async () => {
    const tracker = trackerOver(t.db);
    await enqueue(tracker, 'beta', 1);
    let id = '';
    for (let cycle = 1; cycle <= MAX_HANDBACKS; cycle++) {
      const [claimed] = await tracker.fetchReady(1, { jobType: 'beta' });
      // While the breaker is open the claim lets one probe through: this job is it.
      expect(claimed, `cycle ${cycle}`).toBeDefined();
      id = claimed!.id;
      clock.advance((DISPATCH_LEASE_SECONDS + 1) * 1000);
      const [rescued] = await tracker.rescueExpiredLeases();
      expect(rescued).toMatchObject({ undelivered: true, neverDelivered: cycle === MAX_HANDBACKS });
    }
    const job = await statusOf(id);
    expect(job).toMatchObject({ status: 'failed', handbacks: MAX_HANDBACKS });
    const last = await tracker.getJob(id);
    expect(last?.lastError).toMatch(/never delivered: no executor began any of its last 10 claims/);
    // No attempt was ever counted against it: every one of them was an undelivered claim.
    const outcomes = await t.db.query<{ outcome: string }>(
      'SELECT DISTINCT outcome FROM job_executions WHERE job_id = :id',
      { id },
    );
    expect(outcomes.rows).toEqual([{ outcome: 'undelivered' }]);
  });

  test('opens its type’s breaker: one probe at a time, until an executor begins an attempt', async () => {
    const tracker = trackerOver(t.db);
    await enqueue(tracker, 'alpha', 6);
    // Three claims come back undelivered: the breaker opens.
    expect(await tracker.fetchReady(3)).toHaveLength(3);
    clock.advance((DISPATCH_LEASE_SECONDS + 1) * 1000);
    expect(await tracker.rescueExpiredLeases()).toHaveLength(3);
    // One probe, and none more while it waits for its executor, though three slots are free.
    const [probe, ...rest] = await tracker.fetchReady(10);
    expect(rest).toEqual([]);
    expect(await tracker.fetchReady(10)).toEqual([]);
    // The probe is delivered: the executor begins it, and the type flows again.
    expect(await tracker.startAttempt(probe!.id, probe!.attempts)).not.toBeNull();
    expect(await tracker.fetchReady(10)).toHaveLength(2);
    const streak = await t.db.query('SELECT undelivered_streak FROM job_type_dispatch');
    expect(streak.rows).toEqual([{ undelivered_streak: 0 }]);
  });

  test('a fan-out reports the hand-backs of each type, for its metric and alarm', async () => {
    const tracker = trackerOver(t.db);
    await enqueue(tracker, 'alpha', 2);
    await enqueue(tracker, 'beta', 1);
    const publisher: JobPublisher = { maxBatch: 10, publish: async (e) => e.map(() => ({ ok: true })) };
    expect((await fanOutDueJobs(tracker, publisher, { rescueLimit: 0 })).published).toBe(3);
    clock.advance((DISPATCH_LEASE_SECONDS + 1) * 1000);
    const run = await fanOutDueJobs(tracker, publisher);
    expect(run.handedBack).toBe(3);
    expect(run.handedBackByType).toEqual({ alpha: 2, beta: 1 });
  });
});

describe("an executor's next job", () => {
  const o = createObservability('executor-test');
  function executor(db: Database, die: { afterClaim: boolean }) {
    const tracker = new JobTracker({ db, registry: registry(), clock });
    const runtime = { tracker, registry: tracker.registry } as unknown as JobRuntime;
    const dispatcher = new JobDispatcher(tracker.registry, {}) as unknown as LendingDispatcher;
    if (die.afterClaim) {
      // The invocation dies right after the statement that reported a job and claimed the next.
      // (A type without a rate or per-key limit reports through the statement that may also claim behind.)
      const complete = tracker.completeAndClaimBehind.bind(tracker);
      tracker.completeAndClaimBehind = async (...args) => {
        await complete(...args);
        throw new Error('the Lambda died');
      };
    }
    return { tracker, handler: createExecutorHandler({ runtime, dispatcher, jobType: 'alpha', o }) };
  }

  test('holds a dispatch lease until begun: a dead executor frees its slot within the lease, uncounted', async () => {
    const { tracker, handler } = executor(dataApi, { afterClaim: true });
    await enqueue(tracker, 'alpha', 2);
    const [first] = await tracker.fetchReady(1);
    const context = { getRemainingTimeInMillis: () => 3_600_000 } as Context;
    await expect(
      handler(
        {
          source: 'lana.jobs',
          'detail-type': 'job.ready',
          detail: { jobId: first!.id, jobType: 'alpha', attempt: first!.attempts, payload: { n: 0 } },
        },
        context,
      ),
    ).rejects.toThrow(/the Lambda died/);
    const next = await t.db.query<{ id: string; started_at: Date | null; lease_expires_at: Date }>(
      "SELECT id, started_at, lease_expires_at FROM jobs WHERE status = 'running'",
    );
    expect(next.rows).toHaveLength(1);
    expect(next.rows[0]!.started_at).toBeNull();
    expect(next.rows[0]!.lease_expires_at.getTime() - clock.now()!.getTime()).toBe(
      DISPATCH_LEASE_SECONDS * 1000,
    );
    clock.advance((DISPATCH_LEASE_SECONDS + 1) * 1000);
    const [rescued] = await tracker.rescueExpiredLeases();
    expect(rescued).toMatchObject({ id: next.rows[0]!.id, undelivered: true, status: 'pending' });
    const job = await statusOf(next.rows[0]!.id);
    // The attempt number stays used (a fencing token) but does not count: max attempts grew with it.
    expect(job.max_attempts - job.attempts).toBe(6);
    // Its slot is free: the type's three slots can all be taken again.
    await enqueue(tracker, 'alpha', 2);
    expect(await tracker.fetchReady(10, { jobType: 'alpha' })).toHaveLength(3);
  });
});

/** The holders of a type's slots held now (only `holder`'s, if given), one per slot. */
async function holders(type: string, holder?: string): Promise<string[]> {
  const r = await t.db.query<{ holder: string }>(
    `SELECT holder::text AS holder FROM job_slots
     WHERE job_type = :type AND holder IS NOT NULL AND expires_at > now()
       AND (CAST(:holder AS uuid) IS NULL OR holder = CAST(:holder AS uuid))
     ORDER BY slot`,
    { type, holder: holder ?? null },
  );
  return r.rows.map((row) => row.holder);
}

describe('a local worker holding a limited type’s slots', () => {
  test('claims once per job of a trickle: the slots it gives up wake the other workers, not itself', async () => {
    const tracker = trackerOver(t.db, false);
    let claims = 0;
    const claim = tracker.claimForWorker.bind(tracker);
    tracker.claimForWorker = (...args) => {
      claims++;
      return claim(...args);
    };
    const woken: string[] = [];
    const other = await t.db.listen('lana_jobs', (payload) => woken.push(payload));
    const worker = new Worker({
      tracker,
      dispatcher: new JobDispatcher(tracker.registry, {}),
      listen: (onNotify) => t.db.listen('lana_jobs', onNotify),
      pollIntervalMs: 3_600_000,
    });
    await worker.start();
    await new Promise((r) => setTimeout(r, 200));
    const enqueuer = trackerOver(t.db, false);
    const before = claims;
    // Enqueued from another tracker (no eager start): each job is announced, claimed, run, and its slot
    // given back once the job ends (the worker keeps one lingering).
    for (let i = 0; i < 10; i++) {
      await enqueuer.enqueue({ type: 'alpha', payload: { n: i } });
      await new Promise((r) => setTimeout(r, 50));
    }
    await worker.idle();
    await new Promise((r) => setTimeout(r, 200));
    await worker.stop();
    await other();
    // Its give-ups were announced to the others (by name)...
    expect(woken.some((p) => p.startsWith('slots-given-up-by:'))).toBe(true);
    // ...and woke no claim of its own: one claim per job (three each before, with two for nothing).
    expect(claims - before).toBeLessThanOrEqual(12);
    const done = await t.db.query<{ n: number }>(
      "SELECT count(*)::integer AS n FROM jobs WHERE status = 'completed'",
    );
    expect(done.rows[0]!.n).toBe(10);
  });

  test('a trickle runs in the slot that lingers: no slot row written, none taken or given up', async () => {
    const tracker = trackerOver(t.db, false);
    const worker = new Worker({
      tracker,
      dispatcher: new JobDispatcher(tracker.registry, {}),
      listen: (onNotify) => t.db.listen('lana_jobs', onNotify),
      concurrency: 10,
      // Held through the test on a loaded machine, and no poll meanwhile.
      slotLingerMs: 60_000,
      pollIntervalMs: 3_600_000,
    });
    // Whether each claim settled the holds (recorded on the way to the real claim).
    const settles: boolean[] = [];
    const claim = tracker.claimForWorker.bind(tracker);
    tracker.claimForWorker = (limit, slots) => {
      settles.push(slots?.settle ?? true);
      return claim(limit, slots);
    };
    await worker.start();
    const enqueuer = trackerOver(t.db, false);
    const { job: first } = await enqueuer.enqueue({ type: 'alpha', payload: { n: 0 } });
    await expect
      .poll(async () => (await tracker.getJob(first.id))?.status, { timeout: 15_000 })
      .toBe('completed');
    await worker.idle();
    // Each slot row as it stands (xmin changes with any write to the row), one of them held.
    const rows = () =>
      t.db.query<{ slot: number; xmin: string; held: boolean }>(
        "SELECT slot, xmin::text AS xmin, holder IS NOT NULL AS held FROM job_slots WHERE job_type = 'alpha' ORDER BY slot",
      );
    const before = (await rows()).rows;
    expect(before.filter((r) => r.held)).toHaveLength(1);
    const woken: string[] = [];
    const other = await t.db.listen('lana_jobs', (payload) => woken.push(payload));
    for (let i = 1; i <= 8; i++) {
      const { job } = await enqueuer.enqueue({ type: 'alpha', payload: { n: i } });
      await expect
        .poll(async () => (await tracker.getJob(job.id))?.status, { timeout: 15_000 })
        .toBe('completed');
    }
    await worker.idle();
    await other();
    // Every job ran in the lingering slot: the claims took none of the free ones (one due job each, where
    // the room was 10) and renewed the fresh hold without writing it, so nothing was given up either.
    expect((await rows()).rows).toEqual(before);
    expect(woken.filter((p) => p.startsWith('slots-given-up-by:'))).toEqual([]);
    // Holding what it keeps, confirmed a moment ago: the trickle's claims left the holds alone (0025).
    expect(settles.filter((settle) => !settle).length).toBeGreaterThanOrEqual(8);
    await worker.stop();
  });

  test('takes no more slots than due jobs, with room for more', async () => {
    const tracker = trackerOver(t.db, false);
    await enqueue(tracker, 'alpha', 2);
    const woken: string[] = [];
    const other = await t.db.listen('lana_jobs', (payload) => woken.push(payload));
    const answer = await tracker.claimForWorker(10, {
      worker: '00000000-0000-7000-8000-000000000001',
      concurrency: 10,
      inHand: {},
    });
    await other();
    expect(answer.jobs).toHaveLength(2);
    expect(answer.held).toEqual({ alpha: 2 });
    // Two of alpha's three slots taken, none taken and given back in the same claim.
    expect(woken.filter((p) => p.startsWith('slots-given-up-by:'))).toEqual([]);
  });

  test('a claim told not to settle only claims: it gives up and renews nothing, and still takes slots it needs', async () => {
    const tracker = trackerOver(t.db, false);
    const worker = '00000000-0000-7000-8000-000000000002';
    await enqueue(tracker, 'alpha', 3);
    const first = await tracker.claimForWorker(10, { worker, concurrency: 10, inHand: {} });
    expect(first.held).toEqual({ alpha: 3 });
    const slotRows = () =>
      t.db.query<{ slot: number; xmin: string; holder: string | null }>(
        "SELECT slot, xmin::text AS xmin, holder::text AS holder FROM job_slots WHERE job_type = 'alpha' ORDER BY slot",
      );
    const before = (await slotRows()).rows;
    // One job left in hand, three slots held: a settling claim would give two up. This one keeps them all
    // and writes none of them; it takes beta's slots for beta's due jobs.
    await enqueue(tracker, 'beta', 1);
    const quiet = await tracker.claimForWorker(10, {
      worker,
      concurrency: 10,
      inHand: { alpha: 1 },
      settle: false,
    });
    expect(quiet.jobs.map((j) => j.jobType)).toEqual(['beta']);
    expect(quiet.held).toEqual({ alpha: 3, beta: 1 });
    expect((await slotRows()).rows).toEqual(before);
    // The default settles: the two alpha slots beyond the one job in hand go back.
    const settling = await tracker.claimForWorker(10, {
      worker,
      concurrency: 10,
      inHand: { alpha: 1, beta: 1 },
    });
    expect(settling.held).toEqual({ alpha: 1, beta: 1 });
  });

  test('claims again as it finishes its jobs, without waiting for a poll or a notification', async () => {
    const tracker = trackerOver(t.db, false);
    await enqueue(tracker, 'alpha', 600);
    let claims = 0;
    const claim = tracker.claimForWorker.bind(tracker);
    tracker.claimForWorker = (...args) => {
      claims++;
      return claim(...args);
    };
    // No LISTEN and a poll an hour away: only finishing its own jobs can make it claim again.
    const worker = new Worker({
      tracker,
      dispatcher: new JobDispatcher(tracker.registry, {}),
      concurrency: 3,
      pollIntervalMs: 3_600_000,
    });
    await worker.start();
    await worker.idle();
    await worker.stop();
    const done = await t.db.query<{ n: number }>(
      "SELECT count(*)::integer AS n FROM jobs WHERE status = 'completed'",
    );
    expect(done.rows[0]!.n).toBe(600);
    // It claims ahead, as for a type without a limit: far fewer claims than jobs.
    expect(claims).toBeLessThan(600 / 3);
    // And gave its slots back as it stopped.
    const held = await t.db.query('SELECT 1 FROM job_slots WHERE holder IS NOT NULL');
    expect(held.rows).toEqual([]);
  });

  test('never runs more of a type at once than its limit, across workers', async () => {
    let running = { alpha: 0, beta: 0 };
    const most = { alpha: 0, beta: 0 };
    const reg = () =>
      registry(async (type) => {
        const k = type as 'alpha' | 'beta';
        running = { ...running, [k]: running[k] + 1 };
        most[k] = Math.max(most[k], running[k]);
        await new Promise((r) => setTimeout(r, 3));
        running = { ...running, [k]: running[k] - 1 };
      });
    const workers = [1, 2, 3].map(() => {
      const tracker = new JobTracker({ db: t.db, registry: reg() });
      return new Worker({
        tracker,
        dispatcher: new JobDispatcher(tracker.registry, {}),
        concurrency: 4,
        listen: (onNotify) => t.db.listen('lana_jobs', onNotify),
      });
    });
    const tracker = trackerOver(t.db, false);
    await enqueue(tracker, 'alpha', 150);
    await enqueue(tracker, 'beta', 100);
    await Promise.all(workers.map((w) => w.start()));
    await expect
      .poll(
        async () =>
          (
            await t.db.query<{ n: number }>(
              "SELECT count(*)::integer AS n FROM jobs WHERE status = 'completed'",
            )
          ).rows[0]!.n,
        { timeout: 30_000, interval: 100 },
      )
      .toBe(250);
    await Promise.all(workers.map((w) => w.stop()));
    expect(most.alpha).toBeLessThanOrEqual(3);
    expect(most.beta).toBeLessThanOrEqual(2);
    expect(most.alpha).toBeGreaterThan(0);
  });

  test('starts an eagerly enqueued job in a slot it holds, and no more than its limit', async () => {
    const tracker = trackerOver(t.db, false);
    const worker = new Worker({
      tracker,
      dispatcher: new JobDispatcher(tracker.registry, {}),
      concurrency: 10,
      listen: (onNotify) => t.db.listen('lana_jobs', onNotify),
      // Held long enough for this test on a loaded machine, and no poll to give it up meanwhile.
      slotLingerMs: 60_000,
      pollIntervalMs: 3_600_000,
    });
    await worker.start();
    await worker.idle();
    // The first job takes a slot of beta for the worker as its insert commits (the worker held none).
    const { job: first } = await tracker.enqueue({ type: 'beta', payload: { n: 0 } });
    expect(first.status).toBe('running');
    await expect
      .poll(async () => (await tracker.getJob(first.id))?.status, { timeout: 15_000 })
      .toBe('completed');
    await worker.idle();
    // The slot lingers: the next job starts in it, and takes no other.
    const { job } = await tracker.enqueue({ type: 'beta', payload: { n: 1 } });
    expect(job.status).toBe('running');
    expect(await holders('beta')).toEqual([worker.id]);
    await worker.stop();
    expect((await t.db.query('SELECT 1 FROM job_slots WHERE holder IS NOT NULL')).rows).toEqual([]);
  });

  test('an eager start in a slot it takes: held by the worker, given up when its linger ends', async () => {
    let open = () => {};
    const gate = new Promise<void>((r) => {
      open = r;
    });
    const tracker = new JobTracker({ db: t.db, registry: registry(() => gate) });
    const worker = new Worker({
      tracker,
      dispatcher: new JobDispatcher(tracker.registry, {}),
      concurrency: 10,
      listen: (onNotify) => t.db.listen('lana_jobs', onNotify),
      slotLingerMs: 100,
    });
    await worker.start();
    await worker.idle();
    expect(await holders('beta')).toEqual([]);
    // Both of beta's slots, one per job, each taken as its job's insert commits.
    const a = await tracker.enqueue({ type: 'beta', payload: { n: 0 } });
    const b = await tracker.enqueue({ type: 'beta', payload: { n: 1 } });
    expect([a.job.status, b.job.status]).toEqual(['running', 'running']);
    expect(await holders('beta')).toEqual([worker.id, worker.id]);
    // The limit is reached: the third waits, due, for a slot, with nothing taken for it.
    const c = await tracker.enqueue({ type: 'beta', payload: { n: 2 } });
    expect(c.job).toMatchObject({ status: 'pending', attempts: 0 });
    expect(await holders('beta')).toEqual([worker.id, worker.id]);
    open();
    await expect
      .poll(async () => (await tracker.getJob(c.job.id))?.status, { timeout: 15_000 })
      .toBe('completed');
    await worker.idle();
    await expect.poll(() => holders('beta'), { timeout: 15_000, interval: 20 }).toEqual([]);
    await worker.stop();
  });

  test('an eager start takes no slot another holds, nor one of a paused type, nor one for a key that exists', async () => {
    const tracker = trackerOver(t.db, false);
    const worker = new Worker({
      tracker,
      dispatcher: new JobDispatcher(tracker.registry, {}),
      concurrency: 10,
      // Not woken by the jobs queued here, and no poll: it claims none of them meanwhile.
      pollIntervalMs: 3_600_000,
    });
    await worker.start();
    await worker.idle();
    try {
      // beta's two slots held by another worker: the job waits, and this worker holds nothing.
      await t.db.query(
        "UPDATE job_slots SET holder = gen_random_uuid(), expires_at = now() + interval '1 hour' WHERE job_type = 'beta'",
      );
      const held = await tracker.enqueue({ type: 'beta', payload: { n: 0 } });
      expect(held.job).toMatchObject({ status: 'pending', attempts: 0 });
      expect(await holders('beta', worker.id)).toEqual([]);
      await t.db.query("UPDATE job_slots SET holder = NULL, expires_at = NULL WHERE job_type = 'beta'");
      await tracker.cancel(held.job.id);

      // alpha paused: queued to wait for the resume, no slot taken.
      await tracker.pauseType('alpha', { by: 'test' });
      const paused = await tracker.enqueue({ type: 'alpha', payload: { n: 0 } });
      expect(paused.job).toMatchObject({ status: 'pending', attempts: 0 });
      expect(await holders('alpha')).toEqual([]);
      await tracker.cancel(paused.job.id);
      await tracker.resumeType('alpha');

      // A (type, key) that exists: the enqueue answers the existing job and takes no slot for it.
      const key = { type: 'alpha' as const, payload: { n: 1 }, idempotencyKey: 'once' };
      await trackerOver(t.db, false).enqueue(key);
      const again = await tracker.enqueue(key);
      expect(again.created).toBe(false);
      expect(await holders('alpha', worker.id)).toEqual([]);
    } finally {
      await worker.stop();
    }
  });

  test('gives a lingering slot up when its linger ends', async () => {
    const tracker = trackerOver(t.db, false);
    const worker = new Worker({
      tracker,
      dispatcher: new JobDispatcher(tracker.registry, {}),
      concurrency: 4,
      slotLingerMs: 100,
    });
    await enqueue(tracker, 'beta', 2);
    await worker.start();
    await worker.idle();
    // Within its linger the worker still holds a slot of beta; then it gives it up, without a claim.
    await expect
      .poll(async () => (await t.db.query('SELECT 1 FROM job_slots WHERE holder IS NOT NULL')).rows.length, {
        timeout: 15_000,
        interval: 20,
      })
      .toBe(0);
    await worker.stop();
  });
});
