import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { z } from 'zod';
import type { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import type { Database } from '../../shared/db/port.js';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { JobInputError } from '../../shared/jobs/errors.js';
import type { ClaimedJob } from '../../shared/jobs/model.js';
import { DISPATCH_LEASE_SECONDS, JobTypeRegistry } from '../../shared/jobs/registry.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { Worker } from '../../shared/runtime/worker.js';
import { type DataApiFixture, dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * Per-key concurrency (migration 0018): a type names a payload field as its key and a limit per key; at
 * most that many of its jobs with one key run at once, across every claimer (fetch-ready, executors' next
 * job, local workers, through both drivers), while jobs with other keys flow, and no claim waits for
 * another. A job over its key's limit stays due, uncounted; its key frees as the running job ends.
 */
const schema = z.object({
  n: z.number().int(),
  facility: z.string().optional(),
  tenant: z.number().int().optional(),
  anything: z.unknown().optional(),
});
type Running = Map<string, number>;

function registry(onRun?: (job: ClaimedJob) => Promise<void>) {
  const execute = async (_payload: unknown, ctx: { job: ClaimedJob }): Promise<undefined> => {
    await onRun?.(ctx.job);
    return undefined;
  };
  return (
    new JobTypeRegistry()
      // A concurrency limit too: its claims take slots (fetch-ready) or a worker's held slots.
      .register({
        type: 'disburse',
        description: 'one per facility',
        schema,
        concurrency: 10,
        concurrencyKey: { field: 'facility', limit: 1 },
        timeoutSeconds: 60,
        execute,
      })
      // No concurrency limit: claimed as an unlimited type, its keys still limited.
      .register({
        type: 'pair',
        description: 'two per tenant',
        schema,
        concurrencyKey: { field: 'tenant', limit: 2 },
        timeoutSeconds: 60,
        execute,
      })
      .register({ type: 'loose', description: 'no key', schema, execute })
      .register({
        type: 'odd',
        description: 'a key field the schema leaves open',
        schema,
        concurrencyKey: { field: 'anything', limit: 1 },
        execute,
      })
  );
}
type Registry = ReturnType<typeof registry>;
type Tracker = JobTracker<Registry['schemas']>;

let t: TestDatabase;
let fixture: DataApiFixture;
let dataApi: DataApiDatabase;

beforeAll(async () => {
  t = await createTestDatabase({ poolSize: 12 });
  fixture = await startDataApiFixture(t.url);
  dataApi = dataApiDriverOver(fixture, t.name);
});
afterAll(async () => {
  await dataApi?.close();
  await fixture?.close();
  await t?.drop();
});
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_execution_records, job_payload_changes CASCADE');
});

async function keyOf(id: string): Promise<string | null> {
  const r = await t.db.query<{ concurrency_key: string | null }>(
    'SELECT concurrency_key FROM jobs WHERE id = :id',
    { id },
  );
  return r.rows[0]!.concurrency_key;
}

const facilities = (jobs: readonly ClaimedJob[]) =>
  jobs.map((j) => (j.payload as { facility?: string }).facility ?? '-').sort();

describe('declaring a per-key limit', () => {
  const base = { description: 'd', schema, execute: async () => undefined };
  test.each([
    [{ field: 'facility', limit: 0 }, /concurrencyKey\.limit must be an integer from 1 to 10000/],
    [{ field: 'facility', limit: 1.5 }, /concurrencyKey\.limit must be an integer from 1 to 10000/],
    [{ field: 'facility', limit: 10_001 }, /concurrencyKey\.limit must be an integer from 1 to 10000/],
    [{ field: '', limit: 1 }, /concurrencyKey\.field must name a top-level payload field/],
    [{ field: 'a.b', limit: 1 }, /concurrencyKey\.field must name a top-level payload field/],
    [{ field: 'facilityId', limit: 1 }, /"facilityId" is not a field of its payload schema/],
  ])('%j is refused at registration', (key, message) => {
    expect(() =>
      new JobTypeRegistry().register({
        ...base,
        type: 'x',
        concurrencyKey: key as { field: 'n'; limit: number },
      }),
    ).toThrow(message);
  });

  test('a field that cannot hold a key (an object) is refused', () => {
    expect(() =>
      new JobTypeRegistry().register({
        ...base,
        type: 'x',
        schema: z.object({ where: z.object({ id: z.string() }) }),
        concurrencyKey: { field: 'where', limit: 1 },
      }),
    ).toThrow(/"where" must hold a string or an integer \(its schema says object\)/);
  });

  test('a field of one variant of a union is accepted', () => {
    const union = z.discriminatedUnion('kind', [
      z.object({ kind: z.literal('a'), facility: z.string() }),
      z.object({ kind: z.literal('b') }),
    ]);
    const r = new JobTypeRegistry().register({
      ...base,
      type: 'x',
      schema: union,
      concurrencyKey: { field: 'facility', limit: 3 },
    });
    expect(r.get('x')?.concurrencyKey).toEqual({ field: 'facility', limit: 3 });
  });
});

describe('the key at enqueue', () => {
  const tracker = () => new JobTracker({ db: t.db, registry: registry() }) as Tracker;

  test('is the payload field: a string, an integer as decimal text, none when absent', async () => {
    const [a, b, c, d] = await tracker().enqueueMany([
      { type: 'disburse', payload: { n: 1, facility: 'f-1' } },
      { type: 'pair', payload: { n: 2, tenant: 42 } },
      { type: 'disburse', payload: { n: 3 } },
      { type: 'loose', payload: { n: 4, facility: 'f-1' } },
    ]);
    expect(await keyOf(a!.job.id)).toBe('f-1');
    expect(await keyOf(b!.job.id)).toBe('42');
    expect(await keyOf(c!.job.id)).toBeNull();
    expect(await keyOf(d!.job.id)).toBeNull();
  });

  test.each([
    [
      { n: 1, anything: true },
      /payload\.anything \(the concurrency key of odd\) must be a string or an integer \(got boolean\)/,
    ],
    [{ n: 1, anything: 1.5 }, /must be a string or an integer \(got 1\.5\)/],
    [{ n: 1, anything: { id: 'x' } }, /must be a string or an integer \(got object\)/],
    [{ n: 1, anything: '' }, /must be 1 to 200 characters \(got 0\)/],
    [{ n: 1, anything: 'k'.repeat(201) }, /must be 1 to 200 characters \(got 201\)/],
  ])('a key that cannot be one (%j) is refused, and nothing is written', async (payload, message) => {
    for (const enqueue of [
      () => tracker().enqueue({ type: 'odd', payload }),
      () => tracker().enqueueUntyped([{ type: 'odd', payload }]),
    ]) {
      const err = await enqueue().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(JobInputError);
      expect((err as JobInputError).code).toBe('invalid_payload');
      expect((err as Error).message).toMatch(message);
    }
    expect((await t.db.query('SELECT 1 FROM jobs')).rows).toEqual([]);
  });

  test('a debounced job has its payload’s key, and the burst’s last payload’s key', async () => {
    const tr = tracker();
    const debounce = { key: 'burst', windowSeconds: 60 };
    const { job } = await tr.enqueue({ type: 'disburse', payload: { n: 1, facility: 'f-1' }, debounce });
    expect(await keyOf(job.id)).toBe('f-1');
    await tr.enqueue({ type: 'disburse', payload: { n: 2, facility: 'f-2' }, debounce });
    expect(await keyOf(job.id)).toBe('f-2');
  });

  test('a replay with a new payload takes the new payload’s key', async () => {
    const tr = tracker();
    const { job } = await tr.enqueue({ type: 'disburse', payload: { n: 1, facility: 'f-1' } });
    await tr.cancel(job.id);
    await tr.retryWithPayload(job.id, { n: 1, facility: 'f-2' }, 'alice');
    expect(await keyOf(job.id)).toBe('f-2');
    await tr.cancel(job.id);
    await tr.retryWithPayload(job.id, { n: 1 }, 'alice');
    expect(await keyOf(job.id)).toBeNull();
  });
});

describe.each([
  ['node-postgres', () => t.db as Database],
  ['Data API', () => dataApi as Database],
])('the claims keep the limit per key (%s)', (_driver, db) => {
  let clock: ManualClock;
  beforeEach(() => {
    clock = new ManualClock('2026-06-01T00:00:00Z');
  });
  const trackerOver = (withClock = true) =>
    new JobTracker({ db: db(), registry: registry(), ...(withClock ? { clock } : {}) }) as Tracker;

  test('one job per key runs; the others wait due and uncounted while other keys flow', async () => {
    const tracker = trackerOver();
    await tracker.enqueueMany([
      ...[1, 2, 3].map((n) => ({ type: 'disburse' as const, payload: { n, facility: 'A' } })),
      ...[4, 5].map((n) => ({ type: 'disburse' as const, payload: { n, facility: 'B' } })),
      ...[6, 7].map((n) => ({ type: 'disburse' as const, payload: { n } })),
    ]);
    expect(facilities(await tracker.fetchReady(10))).toEqual(['-', '-', 'A', 'B']);
    expect(await tracker.fetchReady(10)).toEqual([]);
    const waiting = await t.db.query<{ status: string; attempts: number }>(
      "SELECT DISTINCT status, attempts FROM jobs WHERE status <> 'running'",
    );
    expect(waiting.rows).toEqual([{ status: 'pending', attempts: 0 }]);
  });

  test('a limit of two runs two per key, in a type without a concurrency limit', async () => {
    const tracker = trackerOver();
    await tracker.enqueueMany(
      [1, 1, 1, 2, 2, 2].map((tenant, n) => ({ type: 'pair' as const, payload: { n, tenant } })),
    );
    const claimed = await tracker.fetchReady(10, { startNow: true });
    expect(claimed.map((j) => (j.payload as { tenant: number }).tenant).sort()).toEqual([1, 1, 2, 2]);
    expect(await tracker.fetchReady(10, { jobType: 'pair' })).toEqual([]);
  });

  test('a key is freed as its job completes, fails, is cancelled, or its lease expires', async () => {
    const tracker = trackerOver();
    await tracker.enqueueMany(
      [1, 2, 3, 4, 5].map((n) => ({ type: 'disburse' as const, payload: { n, facility: 'A' } })),
    );
    const next = async () => {
      const claimed = await tracker.fetchReady(10);
      expect(claimed.length).toBeLessThanOrEqual(1);
      return claimed[0];
    };
    const first = (await next())!;
    expect(await next()).toBeUndefined();
    // Completed: the next job of the key is claimed.
    await tracker.markCompleted(first.id, first.attempts);
    const second = (await next())!;
    expect(second).toBeDefined();
    // Failed (retrying later): the key is free meanwhile.
    await tracker.markFailed(second.id, second.attempts, 'boom');
    const third = (await next())!;
    expect(third).toBeDefined();
    // Cancelled while running.
    await tracker.cancel(third.id);
    const fourth = (await next())!;
    expect(fourth).toBeDefined();
    expect(await next()).toBeUndefined();
    // Its claimer died: once the claim's lease expires the key is free, and the rescue hands it back.
    clock.advance((DISPATCH_LEASE_SECONDS + 1) * 1000);
    const fifth = (await next())!;
    expect(fifth).toBeDefined();
    const [rescued] = await tracker.rescueExpiredLeases();
    expect(rescued).toMatchObject({ id: fourth.id, undelivered: true });
    // The rescued job waits behind the key's running job, uncounted.
    expect(await next()).toBeUndefined();
    await tracker.markCompleted(fifth.id, fifth.attempts);
    expect((await next())?.id).toBe(fourth.id);
    expect(new Set([first.id, second.id, third.id, fourth.id, fifth.id]).size).toBe(5);
  });

  test("an executor's report frees the key for its next job in the same statement", async () => {
    const tracker = trackerOver();
    await tracker.enqueueMany(
      [1, 2].map((n) => ({ type: 'disburse' as const, payload: { n, facility: 'A' } })),
    );
    const [first] = await tracker.fetchReady(10);
    const started = await tracker.startAttempt(first!.id, first!.attempts);
    expect(started).not.toBeNull();
    const { completed, next } = await tracker.completeAndClaimNext(
      { id: first!.id, attempt: first!.attempts },
      'disburse',
    );
    expect(completed).toBe(true);
    expect(next).not.toBeNull();
    expect(next!.id).not.toBe(first!.id);
  });

  test('a claimer stalled holding one key delays no claim of another key, and no claim waits', async () => {
    const tracker = trackerOver(false);
    await tracker.enqueueMany([
      ...[1, 2].map((n) => ({ type: 'disburse' as const, payload: { n, facility: 'A' } })),
      ...[3, 4].map((n) => ({ type: 'disburse' as const, payload: { n, facility: 'B' } })),
    ]);
    // The first claim made the slot rows; the stalled holder claims A's first job and keeps its
    // transaction open, holding A's key lock and the row.
    expect(await tracker.fetchReady(1, { jobType: 'loose' })).toEqual([]);
    const holder = new pg.Client({ connectionString: t.url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      const held = await holder.query(
        `SELECT payload->>'facility' AS facility FROM lana_jobs_claim_slotted($1::jsonb, 'disburse', 1, now(),
           false, 90, NULL, NULL, NULL, NULL, NULL)`,
        [JSON.stringify({ disburse: 10, $keys: { disburse: 1, pair: 2, odd: 1 } })],
      );
      expect(held.rows).toEqual([{ facility: 'A' }]);
      const started = performance.now();
      const claimed = await tracker.fetchReady(10);
      expect(performance.now() - started).toBeLessThan(3000);
      expect(facilities(claimed)).toEqual(['B']);
    } finally {
      await holder.query('ROLLBACK');
      await holder.end();
    }
    // The holder gave up: A's first job is claimable again (B's second waits behind B's first).
    expect(facilities(await tracker.fetchReady(10))).toEqual(['A']);
  });

  test('several concurrent claimers never run two jobs of one key at once', async () => {
    const running: Running = new Map();
    const most = new Map<string, number>();
    const jobs = [
      // Four facilities (limit 1) and three tenants (limit 2), eight jobs each, and unkeyed jobs.
      ...Array.from({ length: 32 }, (_, n) => ({
        type: 'disburse' as const,
        payload: { n, facility: `f${n % 4}` },
      })),
      ...Array.from({ length: 24 }, (_, n) => ({ type: 'pair' as const, payload: { n, tenant: n % 3 } })),
      ...Array.from({ length: 8 }, (_, n) => ({ type: 'disburse' as const, payload: { n } })),
    ];
    await trackerOver(false).enqueueMany(jobs);
    const claimers = Array.from({ length: 6 }, () => trackerOver(false));
    let done = 0;
    await Promise.all(
      claimers.map(async (tracker) => {
        let idle = 0;
        while (done < jobs.length && idle < 500) {
          const claimed = await tracker.fetchReady(3);
          if (claimed.length === 0) {
            idle++;
            await new Promise((r) => setTimeout(r, 2));
            continue;
          }
          idle = 0;
          await Promise.all(
            claimed.map(async (job) => {
              const p = job.payload as { facility?: string; tenant?: number };
              const key = p.facility ?? (p.tenant === undefined ? null : `t${p.tenant}`);
              if (key !== null) {
                running.set(key, (running.get(key) ?? 0) + 1);
                most.set(key, Math.max(most.get(key) ?? 0, running.get(key)!));
              }
              await new Promise((r) => setTimeout(r, 1 + Math.random() * 3));
              // Counted out before the report: the database still runs it until the report commits.
              if (key !== null) running.set(key, running.get(key)! - 1);
              expect(await tracker.markCompleted(job.id, job.attempts)).toBe(true);
              done++;
            }),
          );
        }
      }),
    );
    expect(done).toBe(jobs.length);
    for (const f of ['f0', 'f1', 'f2', 'f3']) expect(most.get(f), f).toBe(1);
    for (const k of ['t0', 't1', 't2']) expect(most.get(k), k).toBeLessThanOrEqual(2);
  });
});

describe('local workers', () => {
  test('never run two jobs of one key at once, and start a key’s next job as its running one ends', async () => {
    const running: Running = new Map();
    const most = new Map<string, number>();
    const onRun = async (job: ClaimedJob) => {
      const p = job.payload as { facility?: string; tenant?: number };
      const key = p.facility ?? `t${p.tenant}`;
      running.set(key, (running.get(key) ?? 0) + 1);
      most.set(key, Math.max(most.get(key) ?? 0, running.get(key)!));
      await new Promise((r) => setTimeout(r, 2));
      running.set(key, running.get(key)! - 1);
    };
    const workers = [1, 2, 3].map(() => {
      const tracker = new JobTracker({ db: t.db, registry: registry(onRun) });
      return new Worker({
        tracker,
        dispatcher: new JobDispatcher(tracker.registry, {}),
        concurrency: 4,
        listen: (onNotify) => t.db.listen('lana_jobs', onNotify),
        // No poll: a key's next job starts because its running one ended, not because time passed.
        pollIntervalMs: 3_600_000,
      });
    });
    await Promise.all(workers.map((w) => w.start()));
    const tracker = new JobTracker({ db: t.db, registry: registry() });
    await tracker.enqueueMany([
      ...Array.from({ length: 24 }, (_, n) => ({
        type: 'disburse' as const,
        payload: { n, facility: `f${n % 3}` },
      })),
      ...Array.from({ length: 12 }, (_, n) => ({ type: 'pair' as const, payload: { n, tenant: n % 2 } })),
    ]);
    try {
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
        .toBe(36);
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
    }
    for (const f of ['f0', 'f1', 'f2']) expect(most.get(f), f).toBe(1);
    for (const k of ['t0', 't1']) expect(most.get(k), k).toBeLessThanOrEqual(2);
  });

  test('a worker claims the job its key left due as soon as the key’s running job ends, with no poll', async () => {
    const tracker = new JobTracker({ db: t.db, registry: registry() });
    await tracker.enqueueMany(
      [1, 2, 3, 4, 5].map((n) => ({ type: 'pair' as const, payload: { n, tenant: 7 } })),
    );
    // No notifications and no poll: only the end of its own keyed jobs can make it claim again.
    const worker = new Worker({
      tracker,
      dispatcher: new JobDispatcher(tracker.registry, {}),
      concurrency: 4,
      pollIntervalMs: 3_600_000,
    });
    await worker.start();
    try {
      await expect
        .poll(
          async () =>
            (
              await t.db.query<{ n: number }>(
                "SELECT count(*)::integer AS n FROM jobs WHERE status = 'completed'",
              )
            ).rows[0]!.n,
          { timeout: 15_000, interval: 50 },
        )
        .toBe(5);
    } finally {
      await worker.stop();
    }
  });

  test('a keyed job enqueued beside a worker goes through a claim, never an eager start', async () => {
    const tracker = new JobTracker({ db: t.db, registry: registry() });
    const worker = new Worker({
      tracker,
      dispatcher: new JobDispatcher(tracker.registry, {}),
      concurrency: 4,
      listen: (onNotify) => t.db.listen('lana_jobs', onNotify),
    });
    await worker.start();
    try {
      // An unkeyed job starts eagerly once the worker is idle: it comes back already running.
      await expect
        .poll(async () => (await tracker.enqueue({ type: 'loose', payload: { n: 0 } })).job.status, {
          timeout: 15_000,
        })
        .toBe('running');
      const { job } = await tracker.enqueue({ type: 'disburse', payload: { n: 1, facility: 'A' } });
      expect(job.status).toBe('pending');
      await expect
        .poll(async () => (await tracker.getJob(job.id))?.status, { timeout: 15_000 })
        .toBe('completed');
    } finally {
      await worker.stop();
    }
  });
});

test('a claim of a keyed type refuses to run under REPEATABLE READ, where its count could be stale', async () => {
  const tracker = new JobTracker({ db: t.db, registry: registry() });
  await tracker.enqueue({ type: 'disburse', payload: { n: 1, facility: 'A' } });
  const c = new pg.Client({ connectionString: t.url });
  await c.connect();
  try {
    await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await expect(
      c.query(
        `SELECT * FROM lana_jobs_claim_slotted($1::jsonb, NULL, 5, now(), false, 90, NULL, NULL, NULL, NULL, NULL)`,
        [JSON.stringify({ $keys: { disburse: 1 } })],
      ),
    ).rejects.toThrow(
      /a claim of job type disburse \(per-key limit\) needs READ COMMITTED, not repeatable read/,
    );
  } finally {
    await c.query('ROLLBACK');
    await c.end();
  }
});
