import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { PgDatabase, pgQueryable } from '../../shared/db/pg-driver.js';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobInputError } from '../../shared/jobs/errors.js';
import { JobTracker, MAX_PAYLOAD_BYTES } from '../../shared/jobs/tracker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { countingQueryable, countJobs } from '../support/lifecycle.js';
import { createTestRegistry } from '../support/test-job-types.js';

let t: TestDatabase;
let tracker: ReturnType<typeof makeTracker>;
const clock = new ManualClock('2026-03-01T00:00:00Z');
const makeTracker = (db = t.db) => new JobTracker({ db, registry: createTestRegistry(), clock });

beforeAll(async () => {
  t = await createTestDatabase();
  tracker = makeTracker();
  await t.db.query('CREATE TABLE domain_things (name text NOT NULL)');
});
afterAll(async () => t.drop());
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_execution_records, domain_things');
});

const count = () => countJobs(t.db);
const domainCount = async () =>
  (await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM domain_things')).rows[0]!.n;
/** The row version of a job: unchanged xmin means no statement has written the row since. */
const rowVersion = async (id: string) =>
  (await t.db.query<{ v: string }>('SELECT xmin::text AS v FROM jobs WHERE id = CAST(:id AS uuid)', { id }))
    .rows[0]?.v;

describe('enqueue one job', () => {
  test('pending, due now by the clock, with the type defaults', async () => {
    const { job, created } = await tracker.enqueue({ type: 'noop', payload: { n: 1 } });
    expect(created).toBe(true);
    expect(job).toMatchObject({
      jobType: 'noop',
      payload: { n: 1 },
      status: 'pending',
      attempts: 0,
      maxAttempts: 6,
      priority: 0,
      idempotencyKey: null,
      scheduledAt: clock.now(),
      startedAt: null,
      completedAt: null,
      leaseExpiresAt: null,
      lastError: null,
      createdAt: clock.now(),
    });
    expect(await tracker.getJob(job.id)).toEqual(job);
    expect(await count()).toBe(1);
  });

  test('a time in the past is stored as now; priority and max attempts are stored', async () => {
    const { job } = await tracker.enqueue({
      type: 'noop',
      payload: {},
      runAt: new Date('2020-01-01T00:00:00Z'),
      priority: -5,
      maxAttempts: 2,
    });
    // Not 2020: a past time would jump the queue and read as years of waiting in stats and alarms.
    expect(job.scheduledAt).toEqual(clock.now());
    expect((await tracker.getJob(job.id))!.scheduledAt).toEqual(clock.now());
    expect(job).toMatchObject({ priority: -5, maxAttempts: 2 });
  });

  test('text that looks like SQL is stored verbatim', async () => {
    const key = "x'); DROP TABLE jobs; --";
    const { job } = await tracker.enqueue({
      type: 'always-fails',
      payload: { reason: key },
      idempotencyKey: key,
    });
    const again = await tracker.getJob(job.id);
    expect(again!.idempotencyKey).toBe(key);
    expect(again!.payload).toEqual({ reason: key });
  });

  test('unicode keys up to the limit are kept exactly', async () => {
    const key = '🏦 préstamo 借款 '.repeat(12).slice(0, 255);
    const { job } = await tracker.enqueue({ type: 'noop', payload: {}, idempotencyKey: key });
    expect(job.idempotencyKey).toBe(key);
  });
});

describe('enqueue many', () => {
  test('10,000 jobs in one call and ONE statement, results in input order', async () => {
    const counting = countingQueryable(t.db);
    const jobs = Array.from({ length: 10_000 }, (_, n) => ({ type: 'noop' as const, payload: { n } }));
    const results = await tracker.enqueueMany(jobs, { db: counting });
    expect(counting.statements).toHaveLength(1);
    expect(counting.statements[0]).toMatch(/INSERT INTO jobs/);
    expect(results).toHaveLength(10_000);
    expect(results.every((r) => r.created && r.job.status === 'pending')).toBe(true);
    expect(results.map((r) => (r.job.payload as { n: number }).n)).toEqual(jobs.map((j) => j.payload.n));
    expect(new Set(results.map((r) => r.job.id)).size).toBe(10_000);
    expect(await count()).toBe(10_000);
  });

  test('jobs due at the same time are claimed in the order they were enqueued, within and across calls', async () => {
    // Ids are time-ordered and count up within a millisecond, and the claim breaks ties by id.
    const first = await tracker.enqueueMany(
      Array.from({ length: 300 }, (_, n) => ({ type: 'noop' as const, payload: { n } })),
    );
    const second = await tracker.enqueue({ type: 'noop', payload: { n: 300 } });
    const ids = [...first.map((r) => r.job.id), second.job.id];
    expect([...ids].sort()).toEqual(ids);
    // The kit's clock is frozen: every job is due at the same instant.
    expect(new Set([...first, second].map((r) => r.job.scheduledAt.getTime())).size).toBe(1);
    const claimed = await tracker.fetchReady(301);
    expect(claimed.map((j) => (j.payload as { n: number }).n)).toEqual(
      Array.from({ length: 301 }, (_, n) => n),
    );
  });

  test('more than 10,000 in one call is refused and nothing is written', async () => {
    const jobs = Array.from({ length: 10_001 }, () => ({ type: 'noop' as const, payload: {} }));
    await expect(tracker.enqueueMany(jobs)).rejects.toMatchObject({ code: 'invalid_option' });
    expect(await count()).toBe(0);
  });

  test('an empty batch sends nothing', async () => {
    const counting = countingQueryable(t.db);
    expect(await tracker.enqueueMany([], { db: counting })).toEqual([]);
    expect(counting.statements).toEqual([]);
  });
});

describe('idempotency keys', () => {
  test('a second enqueue returns the existing job and writes nothing', async () => {
    const first = await tracker.enqueue({ type: 'noop', payload: { n: 1 }, idempotencyKey: 'k-1' });
    const version = await rowVersion(first.job.id);
    clock.advanceMinutes(1);
    const second = await tracker.enqueue({ type: 'noop', payload: { n: 2 }, idempotencyKey: 'k-1' });
    clock.advanceMinutes(-1);
    expect(second.created).toBe(false);
    expect(second.job).toEqual(first.job); // the first job as stored: payload, times, everything
    expect(await rowVersion(first.job.id)).toBe(version); // the row was not touched
    expect(await count()).toBe(1);
  });

  test('the key is per job type', async () => {
    const a = await tracker.enqueue({ type: 'noop', payload: {}, idempotencyKey: 'k' });
    const b = await tracker.enqueue({ type: 'always-fails', payload: { reason: 'x' }, idempotencyKey: 'k' });
    expect(b.created).toBe(true);
    expect(b.job.id).not.toBe(a.job.id);
    expect(await count()).toBe(2);
  });

  test('the same key twice in one batch creates one job; the other rows are unaffected', async () => {
    const existing = await tracker.enqueue({ type: 'noop', payload: { n: 0 }, idempotencyKey: 'old' });
    const results = await tracker.enqueueMany([
      { type: 'noop', payload: { n: 1 }, idempotencyKey: 'dup' },
      { type: 'noop', payload: { n: 2 } },
      { type: 'noop', payload: { n: 3 }, idempotencyKey: 'dup' },
      { type: 'noop', payload: { n: 4 }, idempotencyKey: 'old' },
      { type: 'noop', payload: { n: 5 } },
    ]);
    expect(results.map((r) => r.created)).toEqual([true, true, false, false, true]);
    expect(results[0]!.job.id).toBe(results[2]!.job.id);
    expect(results[2]!.job.payload).toEqual({ n: 1 });
    expect(results[3]!.job.id).toBe(existing.job.id);
    expect(results.map((r) => (r.job.payload as { n: number }).n)).toEqual([1, 2, 1, 0, 5]);
    expect(await count()).toBe(4);
  });

  test('concurrent enqueues with one key, on separate pools, give one job', async () => {
    const pools = Array.from({ length: 6 }, () => new PgDatabase({ connectionString: t.url, max: 2 }));
    try {
      const trackers = pools.map((db) => makeTracker(db));
      // Warm the connections so the enqueues really overlap.
      await Promise.all(pools.map((p) => p.query('SELECT 1')));
      for (let round = 0; round < 5; round++) {
        const key = `race-${round}`;
        const results = await Promise.all(
          trackers.flatMap((tr, i) =>
            [0, 1].map((j) => tr.enqueue({ type: 'noop', payload: { n: i * 2 + j }, idempotencyKey: key })),
          ),
        );
        expect(new Set(results.map((r) => r.job.id)).size).toBe(1);
        expect(results.filter((r) => r.created)).toHaveLength(1);
        const winner = results.find((r) => r.created)!;
        expect(results.every((r) => r.job.payload !== undefined)).toBe(true);
        expect(results.map((r) => r.job.payload)).toEqual(results.map(() => winner.job.payload));
      }
      expect(await count()).toBe(5);
    } finally {
      await Promise.all(pools.map((p) => p.close()));
    }
  });
});

describe('transactional enqueue', () => {
  test('db.transaction: rolled back with the caller’s change, committed with it', async () => {
    await expect(
      t.db.transaction(async (tx) => {
        await tx.query("INSERT INTO domain_things VALUES ('a')");
        const { job } = await tracker.enqueue({ type: 'noop', payload: { n: 1 } }, { db: tx });
        expect(job.status).toBe('pending');
        expect(await count()).toBe(0); // invisible outside the transaction
        throw new Error('domain rule violated');
      }),
    ).rejects.toThrow('domain rule violated');
    expect(await count()).toBe(0);
    expect(await domainCount()).toBe(0);

    const id = await t.db.transaction(async (tx) => {
      await tx.query("INSERT INTO domain_things VALUES ('b')");
      return (await tracker.enqueue({ type: 'noop', payload: { n: 2 } }, { db: tx })).job.id;
    });
    expect(await count()).toBe(1);
    expect(await domainCount()).toBe(1);
    expect((await tracker.getJob(id))!.payload).toEqual({ n: 2 });
  });

  test('an idempotent enqueue rolled back leaves the key free', async () => {
    await t.db
      .transaction(async (tx) => {
        await tracker.enqueue({ type: 'noop', payload: {}, idempotencyKey: 'tx-key' }, { db: tx });
        throw new Error('abort');
      })
      .catch(() => {});
    const again = await tracker.enqueue({ type: 'noop', payload: {}, idempotencyKey: 'tx-key' });
    expect(again.created).toBe(true);
    expect(await count()).toBe(1);
  });

  test('pgQueryable over a pg client the caller holds: ROLLBACK leaves nothing, COMMIT keeps both', async () => {
    const client = new pg.Client({ connectionString: t.url });
    await client.connect();
    try {
      await client.query('BEGIN');
      await client.query("INSERT INTO domain_things VALUES ('c')");
      await tracker.enqueueMany(
        [
          { type: 'noop', payload: { n: 1 } },
          { type: 'noop', payload: { n: 2 } },
        ],
        { db: pgQueryable(client) },
      );
      expect(await count()).toBe(0); // not visible before commit
      await client.query('ROLLBACK');
      expect(await count()).toBe(0);
      expect(await domainCount()).toBe(0);

      await client.query('BEGIN');
      await client.query("INSERT INTO domain_things VALUES ('d')");
      const { job } = await tracker.enqueue({ type: 'noop', payload: { n: 3 } }, { db: pgQueryable(client) });
      await client.query('COMMIT');
      expect(await count()).toBe(1);
      expect(await domainCount()).toBe(1);
      expect((await tracker.getJob(job.id))!.payload).toEqual({ n: 3 });
    } finally {
      await client.end();
    }
  });
});

describe('bad input: JobInputError, nothing written', () => {
  const bad: [string, () => Promise<unknown>, string, RegExp][] = [
    [
      'unknown type',
      () => tracker.enqueueUntyped([{ type: 'nope', payload: {} }]),
      'unknown_job_type',
      /unknown job type "nope"/,
    ],
    [
      'payload failing its schema, naming the field',
      () => tracker.enqueueUntyped([{ type: 'always-fails', payload: { reason: 42 } }]),
      'invalid_payload',
      /payload\.reason/,
    ],
    [
      'missing required field',
      () => tracker.enqueueUntyped([{ type: 'always-fails', payload: {} }]),
      'invalid_payload',
      /payload\.reason/,
    ],
    [
      'oversized payload',
      () =>
        tracker.enqueueUntyped([
          { type: 'always-fails', payload: { reason: 'x'.repeat(MAX_PAYLOAD_BYTES) } },
        ]),
      'payload_too_large',
      /limit is 16384 bytes/,
    ],
    [
      'empty key',
      () => tracker.enqueue({ type: 'noop', payload: {}, idempotencyKey: '' }),
      'invalid_option',
      /idempotency key/,
    ],
    [
      'huge key',
      () => tracker.enqueue({ type: 'noop', payload: {}, idempotencyKey: 'k'.repeat(256) }),
      'invalid_option',
      /1 to 255/,
    ],
    [
      'absurd priority',
      () => tracker.enqueue({ type: 'noop', payload: {}, priority: 1e9 }),
      'invalid_option',
      /priority/,
    ],
    [
      'fractional priority',
      () => tracker.enqueue({ type: 'noop', payload: {}, priority: 1.5 }),
      'invalid_option',
      /priority/,
    ],
    [
      'negative max attempts',
      () => tracker.enqueue({ type: 'noop', payload: {}, maxAttempts: -1 }),
      'invalid_option',
      /max attempts must be an integer from 1 to 100/,
    ],
    [
      'invalid date',
      () => tracker.enqueue({ type: 'noop', payload: {}, runAt: new Date('nope') }),
      'invalid_option',
      /run at must be a valid time/,
    ],
    [
      'far future',
      () => tracker.enqueue({ type: 'noop', payload: {}, runAt: new Date('2099-01-01T00:00:00Z') }),
      'invalid_option',
      /5 years/,
    ],
  ];
  test.each(bad)('rejects %s', async (_name, call, code, message) => {
    const error = await call().then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(JobInputError);
    expect((error as JobInputError).code).toBe(code);
    expect((error as JobInputError).message).toMatch(message);
    expect(await count()).toBe(0);
  });

  test('one bad job in a batch writes none of it, and no statement is sent', async () => {
    const counting = countingQueryable(t.db);
    await expect(
      tracker.enqueueUntyped(
        [
          { type: 'noop', payload: {} },
          { type: 'noop', payload: { n: 'one' } },
        ],
        { db: counting },
      ),
    ).rejects.toThrow(/payload\.n/);
    expect(counting.statements).toEqual([]);
    expect(await count()).toBe(0);
  });

  test('typed: TypeScript rejects a wrong payload at compile time, zod at run time, nothing written', async () => {
    // Each call below is a compile error (checked by `npx tsc --noEmit`) AND is rejected at run time.
    // @ts-expect-error: `n` must be a number
    const wrongType = tracker.enqueue({ type: 'noop', payload: { n: 'x' } });
    await expect(wrongType).rejects.toThrow(/invalid payload for noop: payload\.n/);
    // @ts-expect-error: `reason` is required
    const missing = tracker.enqueue({ type: 'always-fails', payload: {} });
    await expect(missing).rejects.toThrow(/payload\.reason/);
    // @ts-expect-error: unknown job type
    const unknown = tracker.enqueue({ type: 'nope', payload: {} });
    await expect(unknown).rejects.toMatchObject({ code: 'unknown_job_type' });
    const good = { type: 'noop', payload: {} } as const;
    // @ts-expect-error: a wrong payload in a batch
    const batch = tracker.enqueueMany([good, { type: 'noop', payload: { n: true } }]);
    await expect(batch).rejects.toMatchObject({ code: 'invalid_payload' });
    // The correct forms compile.
    const ok = await tracker.enqueue({ type: 'always-fails', payload: { reason: 'fine' } });
    expect(ok.created).toBe(true);
    expect(await count()).toBe(1);
  });
});
