import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { pgQueryable } from '../../shared/db/pg-driver.js';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobInputError } from '../../shared/jobs/errors.js';
import { JobTracker, MAX_PAYLOAD_BYTES } from '../../shared/jobs/tracker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { createTestRegistry } from '../support/test-job-types.js';

let t: TestDatabase;
let tracker: ReturnType<typeof makeTracker>;
const clock = new ManualClock('2026-03-01T00:00:00Z');
const makeTracker = (db = t.db) => new JobTracker({ db, registry: createTestRegistry(), clock });

beforeAll(async () => {
  t = await createTestDatabase();
  tracker = makeTracker();
});
afterAll(async () => t.drop());
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_executions');
});

const countJobs = async () =>
  (await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs')).rows[0]!.n;

describe('enqueue', () => {
  test('one job: pending, due now by the clock, with the type defaults', async () => {
    const { job, created } = await tracker.enqueue({ type: 'noop', payload: { n: 1 } });
    expect(created).toBe(true);
    expect(job).toMatchObject({
      jobType: 'noop',
      payload: { n: 1 },
      status: 'pending',
      attempts: 0,
      maxAttempts: 6,
      priority: 0,
      scheduledAt: clock.now(),
      startedAt: null,
      completedAt: null,
    });
  });

  test('10,000 jobs in one call, one statement, results in input order', async () => {
    const jobs = Array.from({ length: 10_000 }, (_, n) => ({ type: 'noop' as const, payload: { n } }));
    const results = await tracker.enqueueMany(jobs);
    expect(results).toHaveLength(10_000);
    expect(results.map((r) => (r.job.payload as { n: number }).n)).toEqual(jobs.map((j) => j.payload.n));
    expect(await countJobs()).toBe(10_000);
  });

  test('an idempotency key returns the existing job and writes nothing', async () => {
    const first = await tracker.enqueue({ type: 'noop', payload: { n: 1 }, idempotencyKey: 'k-1' });
    const second = await tracker.enqueue({ type: 'noop', payload: { n: 2 }, idempotencyKey: 'k-1' });
    expect(second.created).toBe(false);
    expect(second.job.id).toBe(first.job.id);
    expect(second.job.payload).toEqual({ n: 1 });
    expect(await countJobs()).toBe(1);
    // The key is per job type.
    const other = await tracker.enqueue({
      type: 'always-fails',
      payload: { reason: 'x' },
      idempotencyKey: 'k-1',
    });
    expect(other.created).toBe(true);
  });

  test('the same key twice in one batch creates one job', async () => {
    const results = await tracker.enqueueMany([
      { type: 'noop', payload: { n: 1 }, idempotencyKey: 'dup' },
      { type: 'noop', payload: { n: 2 } },
      { type: 'noop', payload: { n: 3 }, idempotencyKey: 'dup' },
    ]);
    expect(results.map((r) => r.created)).toEqual([true, true, false]);
    expect(results[0]!.job.id).toBe(results[2]!.job.id);
    expect(await countJobs()).toBe(2);
  });

  test('concurrent enqueues with one key, from separate connections, give one job', async () => {
    const trackers = Array.from({ length: 8 }, () => makeTracker(t.db));
    const results = await Promise.all(
      trackers.map((tr, n) => tr.enqueue({ type: 'noop', payload: { n }, idempotencyKey: 'race' })),
    );
    expect(new Set(results.map((r) => r.job.id)).size).toBe(1);
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(await countJobs()).toBe(1);
  });

  test('transactional enqueue: rolled back with the caller’s transaction, committed with it', async () => {
    await t.db.query('CREATE TABLE IF NOT EXISTS domain_things (name text)');
    await expect(
      t.db.transaction(async (tx) => {
        await tx.query("INSERT INTO domain_things VALUES ('a')");
        await tracker.enqueue({ type: 'noop', payload: { n: 1 } }, { db: tx });
        throw new Error('domain rule violated');
      }),
    ).rejects.toThrow('domain rule violated');
    expect(await countJobs()).toBe(0);
    await t.db.transaction(async (tx) => {
      await tx.query("INSERT INTO domain_things VALUES ('b')");
      await tracker.enqueue({ type: 'noop', payload: { n: 2 } }, { db: tx });
    });
    expect(await countJobs()).toBe(1);
  });

  test('transactional enqueue through a pg client the caller holds', async () => {
    const client = new pg.Client({ connectionString: t.url });
    await client.connect();
    try {
      await client.query('BEGIN');
      await tracker.enqueue({ type: 'noop', payload: { n: 1 } }, { db: pgQueryable(client) });
      expect(await countJobs()).toBe(0); // not visible before commit
      await client.query('ROLLBACK');
      expect(await countJobs()).toBe(0);
    } finally {
      await client.end();
    }
  });

  test('a job scheduled in the past is simply due; priority and max attempts are stored', async () => {
    const { job } = await tracker.enqueue({
      type: 'noop',
      payload: {},
      runAt: new Date('2020-01-01T00:00:00Z'),
      priority: -5,
      maxAttempts: 2,
    });
    expect(job.scheduledAt).toEqual(new Date('2020-01-01T00:00:00Z'));
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
      'oversized payload',
      () =>
        tracker.enqueueUntyped([
          { type: 'always-fails', payload: { reason: 'x'.repeat(MAX_PAYLOAD_BYTES) } },
        ]),
      'payload_too_large',
      /limit is 32768 bytes/,
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
      /maxAttempts/,
    ],
    [
      'invalid date',
      () => tracker.enqueue({ type: 'noop', payload: {}, runAt: new Date('nope') }),
      'invalid_option',
      /runAt/,
    ],
    [
      'far future',
      () => tracker.enqueue({ type: 'noop', payload: {}, runAt: new Date('2099-01-01T00:00:00Z') }),
      'invalid_option',
      /5 years/,
    ],
  ];
  test.each(bad)('rejects %s with a clear error and writes nothing', async (_name, call, code, message) => {
    // A valid job in the same batch is not written either: validation happens before the statement.
    const error = await call().then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(JobInputError);
    expect((error as JobInputError).code).toBe(code);
    expect((error as JobInputError).message).toMatch(message);
    expect(await countJobs()).toBe(0);
  });

  test('one bad job in a batch writes none of it', async () => {
    await expect(
      tracker.enqueueUntyped([
        { type: 'noop', payload: {} },
        { type: 'noop', payload: { n: 'one' } },
      ]),
    ).rejects.toThrow(/payload\.n/);
    expect(await countJobs()).toBe(0);
  });

  test('huge and unicode keys within the limit are kept exactly', async () => {
    const key = '🏦 préstamo 借款 '.repeat(12).slice(0, 255);
    const { job } = await tracker.enqueue({ type: 'noop', payload: {}, idempotencyKey: key });
    expect(job.idempotencyKey).toBe(key);
  });

  test('enqueue is typed: a wrong payload does not compile', () => {
    const typed = () => {
      // @ts-expect-error: `n` must be a number
      void tracker.enqueue({ type: 'noop', payload: { n: 'x' } });
      // @ts-expect-error: `reason` is required
      void tracker.enqueue({ type: 'always-fails', payload: {} });
      // @ts-expect-error: unknown job type
      void tracker.enqueue({ type: 'nope', payload: {} });
    };
    expect(typeof typed).toBe('function');
  });
});
