import { RDSDataClient } from '@aws-sdk/client-rds-data';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import { loadMigrations, migrate } from '../../shared/db/migrate.js';
import { type Database, DatabaseError, date, decimal, json, uuid } from '../../shared/db/port.js';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { Worker } from '../../shared/runtime/worker.js';
import { type DataApiFixture, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { countJobs } from '../support/lifecycle.js';
import { createTestRegistry, type TestServices } from '../support/test-job-types.js';

/**
 * One contract, two drivers: every statement shape the job system uses must behave identically through
 * node-postgres and through the RDS Data API (the real SDK client against the local Data API fixture,
 * over the same PostgreSQL database).
 */
let t: TestDatabase;
let fixture: DataApiFixture;
let client: RDSDataClient;

const ARNS = {
  resourceArn: 'arn:aws:rds:us-east-1:123456789012:cluster:lana-jobs',
  secretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:lana-jobs',
};

function dataApi(database: string, resumeMaxWaitMs = 5000): DataApiDatabase {
  return new DataApiDatabase({
    ...ARNS,
    database,
    resumeRetry: { maxWaitMs: resumeMaxWaitMs, initialDelayMs: 20 },
    client,
  });
}

type DriverName = 'pg' | 'data-api';
const drivers: Record<DriverName, () => Database> = {
  pg: () => t.db,
  'data-api': () => dataApi(t.name),
};

beforeAll(async () => {
  t = await createTestDatabase();
  fixture = await startDataApiFixture(t.url);
  // maxAttempts 1: the SDK's own retries would hide what the driver does.
  client = new RDSDataClient({
    endpoint: fixture.endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
    maxAttempts: 1,
  });
  await t.db.query(`CREATE TABLE contract (
    id uuid PRIMARY KEY, small smallint, n integer, big bigint, amount numeric(30, 10), ratio float8,
    approx real, ok boolean, at timestamptz, local_at timestamp, day date, doc jsonb, raw json, label text)`);
});
afterAll(async () => {
  client?.destroy();
  await fixture?.close();
  await t?.drop();
});

const ID = '01a2246e-c662-7e2a-aa1f-6e8bb5784e10';
const OTHER_ID = '00000000-0000-4000-8000-000000000000';
const INSERT = `INSERT INTO contract VALUES (CAST(:id AS uuid), :small, :n, :big, CAST(:amount AS numeric), :ratio,
  :approx, :ok, CAST(:at AS timestamptz), CAST(:local_at AS timestamptz), CAST(:day AS date), CAST(:doc AS jsonb),
  CAST(:raw AS json), :label)`;

/** Ids differ between runs; dates and bigints become comparable text. */
function normalise(value: unknown): unknown {
  const labels = new Map<string, string>();
  return JSON.parse(
    JSON.stringify(value, (_key, v: unknown) => {
      if (typeof v === 'bigint') return `${v}n`;
      if (typeof v === 'string' && /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(v)) {
        if (!labels.has(v)) labels.set(v, `id#${labels.size}`);
        return labels.get(v);
      }
      return v;
    }),
  );
}
const lifecycleTranscripts: Partial<Record<DriverName, unknown>> = {};

describe.each(['pg', 'data-api'] as const)('database contract: %s driver', (driverName) => {
  const db = () => drivers[driverName]();

  test('every column type round-trips to the same JavaScript value', async () => {
    const d = db();
    await d.query('DELETE FROM contract');
    const at = new Date('2026-11-28T22:05:01.123Z');
    const doc = {
      a: [1, 'two', { three: null }],
      unicode: 'préstamo 借款 🏦',
      sql: "'; DROP TABLE jobs; --",
      nested: { deep: [true, false, 1.5] },
    };
    const values = {
      id: uuid(ID),
      small: -7,
      n: -42,
      big: 9_007_199_254_740_993n, // 2^53 + 1: not representable as a JS number
      amount: decimal('12345678901234567890.0123456789'),
      ratio: 1.25,
      approx: 1.3,
      ok: true,
      at,
      local_at: new Date('2026-01-31T23:59:59.999Z'),
      day: date('2026-02-28'),
      doc: json(doc),
      raw: json(['x', 2]),
      label: "it's 'quoted' :not_a_param -- 借款 🏦; DROP TABLE contract;",
    };
    const expected = {
      id: ID,
      small: -7,
      n: -42,
      big: 9_007_199_254_740_993n,
      amount: '12345678901234567890.0123456789',
      ratio: 1.25,
      approx: 1.3,
      ok: true,
      at,
      local_at: new Date('2026-01-31T23:59:59.999Z'),
      day: '2026-02-28',
      doc,
      raw: ['x', 2],
      label: "it's 'quoted' :not_a_param -- 借款 🏦; DROP TABLE contract;",
    };
    const inserted = await d.query(`${INSERT} RETURNING *`, values);
    expect(inserted.rowCount).toBe(1);
    expect(inserted.rows[0]).toStrictEqual(expected);
    const selected = await d.query('SELECT * FROM contract WHERE id = CAST(:id AS uuid)', { id: uuid(ID) });
    expect(selected.rows).toStrictEqual([expected]);
  });

  test('NULL in every column, and typed NULL parameters', async () => {
    const d = db();
    await d.query('DELETE FROM contract');
    const res = await d.query(`${INSERT} RETURNING *`, {
      id: uuid(OTHER_ID),
      small: null,
      n: null,
      big: null,
      amount: decimal(null),
      ratio: null,
      approx: null,
      ok: null,
      at: null,
      local_at: null,
      day: date(null),
      doc: json(null),
      raw: json(undefined),
      label: null,
    });
    const { id, ...rest } = res.rows[0]!;
    expect(id).toBe(OTHER_ID);
    expect(Object.values(rest)).toStrictEqual(Array(13).fill(null));
    const typedNulls = await d.query(
      'SELECT CAST(:u AS uuid) AS u, CAST(:j AS jsonb) AS j, CAST(:d AS date) AS d, CAST(:n AS numeric) AS n',
      { u: uuid(null), j: json(null), d: date(null), n: decimal(null) },
    );
    expect(typedNulls.rows).toStrictEqual([{ u: null, j: null, d: null, n: null }]);
  });

  test('bigint and numeric stay exact; floats and timestamps decode as pg does', async () => {
    const res = await db().query(
      `SELECT CAST(:big AS bigint) - 1 AS below_max, CAST(:min AS bigint) AS min,
              CAST(:a AS numeric) + CAST(:b AS numeric) AS sum,
              CAST(:huge AS numeric) * 10 AS huge,
              CAST(1.1 AS real) AS r, CAST(0.1 AS float8) + 0.2 AS f,
              TIMESTAMPTZ '2026-01-01 12:00:00.123456+02' AS micro,
              TIMESTAMP '1999-12-31 23:59:59' AS plain,
              DATE '2024-02-29' AS leap,
              2147483647 AS int4_max, 42::smallint AS int2`,
      {
        big: 9_223_372_036_854_775_807n,
        min: -9_223_372_036_854_775_808n,
        a: decimal('0.1'),
        b: decimal('0.2'),
        huge: decimal('98765432109876543210.123456789012345678'),
      },
    );
    expect(res.rows).toStrictEqual([
      {
        below_max: 9_223_372_036_854_775_806n,
        min: -9_223_372_036_854_775_808n,
        sum: '0.3',
        huge: '987654321098765432101.234567890123456780',
        r: 1.1,
        f: 0.30000000000000004,
        micro: new Date('2026-01-01T10:00:00.123Z'),
        plain: new Date('1999-12-31T23:59:59Z'),
        leap: '2024-02-29',
        int4_max: 2147483647,
        int2: 42,
      },
    ]);
  });

  test('jsonb objects, arrays, strings, numbers and null; one-dimensional arrays', async () => {
    const res = await db().query(
      `SELECT CAST(:o AS jsonb) AS o, CAST(:a AS jsonb) AS a, CAST(:s AS jsonb) AS s, CAST(:n AS jsonb) AS n,
              'null'::jsonb AS jnull, ARRAY[1, 2, 3] AS ints, ARRAY['a', NULL, 'c'] AS texts,
              ARRAY[true, false] AS flags`,
      {
        o: json({ k: 'v', list: [1, { x: 'y' }] }),
        a: json([1, 'two', null]),
        s: json('a "quoted" string'),
        n: json(12.5),
      },
    );
    expect(res.rows).toStrictEqual([
      {
        o: { k: 'v', list: [1, { x: 'y' }] },
        a: [1, 'two', null],
        s: 'a "quoted" string',
        n: 12.5,
        jnull: null,
        ints: [1, 2, 3],
        texts: ['a', null, 'c'],
        flags: [true, false],
      },
    ]);
  });

  test('NULLs, a repeated parameter and ::casts next to parameters; quotes and comments are not parameters', async () => {
    const res = await db().query(
      `SELECT CAST(:x AS integer) AS a, 'x::y :not_me' AS b, :n::int + :n::int AS c, CAST(:flag AS boolean) AS d,
              :label::text AS e -- :ignored in a comment
       /* :also_ignored */`,
      { x: null, n: 21, flag: false, label: 'plain' },
    );
    expect(res.rows).toStrictEqual([{ a: null, b: 'x::y :not_me', c: 42, d: false, e: 'plain' }]);
  });

  test('lists travel as JSON and are unpacked in SQL (no array parameters)', async () => {
    const res = await db().query<{ id: string; n: number }>(
      `SELECT x.id, x.n FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS x(id uuid, n integer)
       WHERE x.id IN (SELECT jsonb_array_elements_text(CAST(:wanted AS jsonb))::uuid) ORDER BY x.n`,
      {
        items: json([
          { id: ID, n: 2 },
          { id: OTHER_ID, n: 1 },
          { id: '11111111-1111-4111-8111-111111111111', n: 3 },
        ]),
        wanted: json([ID, OTHER_ID]),
      },
    );
    expect(res.rows).toStrictEqual([
      { id: OTHER_ID, n: 1 },
      { id: ID, n: 2 },
    ]);
  });

  test('rowCount: rows affected by DML, rows returned otherwise', async () => {
    const d = db();
    await d.query('DELETE FROM contract');
    expect(
      await d.query(
        'INSERT INTO contract (id, n) SELECT gen_random_uuid(), g FROM generate_series(1, :count) g',
        {
          count: 3,
        },
      ),
    ).toStrictEqual({ rows: [], rowCount: 3 });
    expect(await d.query('UPDATE contract SET n = n + 1 WHERE n >= :min', { min: 2 })).toStrictEqual({
      rows: [],
      rowCount: 2,
    });
    expect(await d.query('UPDATE contract SET n = 0 WHERE n > 100')).toStrictEqual({ rows: [], rowCount: 0 });
    expect(await d.query('SELECT n FROM contract WHERE n > 100')).toStrictEqual({ rows: [], rowCount: 0 });
    const deleted = await d.query<{ n: number }>('DELETE FROM contract WHERE n = 4 RETURNING n');
    expect(deleted).toStrictEqual({ rows: [{ n: 4 }], rowCount: 1 });
  });

  test('transactions commit, roll back, see their own writes, and queue concurrent statements', async () => {
    const d = db();
    await d.query('DELETE FROM contract');
    const inside = await d.transaction(async (tx) => {
      await tx.query("INSERT INTO contract (id, label) VALUES (gen_random_uuid(), 'kept')");
      // Issued together: the Data API driver must still send them one at a time.
      await Promise.all(
        [1, 2, 3].map((n) =>
          tx.query('INSERT INTO contract (id, n, label) VALUES (gen_random_uuid(), :n, :label)', {
            n,
            label: `kept ${n}`,
          }),
        ),
      );
      return (await tx.query<{ n: number }>('SELECT count(*)::int AS n FROM contract')).rows[0]!.n;
    });
    expect(inside).toBe(4);
    await expect(
      d.transaction(async (tx) => {
        await tx.query("INSERT INTO contract (id, label) VALUES (gen_random_uuid(), 'dropped')");
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    const err = await d
      .transaction(async (tx) => {
        await tx.query("INSERT INTO contract (id, label) VALUES (gen_random_uuid(), 'dropped too')");
        await tx.query('SELECT 1 / 0');
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatabaseError);
    expect((err as DatabaseError).code).toBe('22012');
    const res = await d.query<{ label: string }>('SELECT label FROM contract ORDER BY label');
    expect(res.rows.map((r) => r.label)).toStrictEqual(['kept', 'kept 1', 'kept 2', 'kept 3']);
  });

  test('a unique violation is a DatabaseError with SQLSTATE 23505', async () => {
    const d = db();
    await d.query('DELETE FROM contract');
    await d.query('INSERT INTO contract (id) VALUES (CAST(:id AS uuid))', { id: uuid(ID) });
    const err = await d
      .query('INSERT INTO contract (id) VALUES (CAST(:id AS uuid))', { id: uuid(ID) })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatabaseError);
    expect((err as DatabaseError).code).toBe('23505');
    expect((err as DatabaseError).isUniqueViolation).toBe(true);
    expect((err as DatabaseError).message).toMatch(/duplicate key value violates unique constraint/);
  });

  test('a missing parameter is a clear error, raised before anything is sent', async () => {
    await expect(db().query('SELECT :a AS a, :b AS b', { a: 1 })).rejects.toThrow(
      'SQL parameter :b was not given',
    );
    await expect(db().query('SELECT CAST(:a AS int) AS a')).rejects.toThrow('SQL parameter :a was not given');
  });

  test('the job lifecycle runs unchanged', async () => {
    const d = db();
    await t.db.query('TRUNCATE jobs, job_execution_records');
    const clock = new ManualClock('2026-03-01T00:00:00Z');
    const tracker = new JobTracker({ db: d, registry: createTestRegistry(), clock });
    const transcript: Record<string, unknown> = {};

    const single = await tracker.enqueue({
      type: 'always-fails',
      payload: { reason: 'x' },
      idempotencyKey: 'k',
    });
    expect(single).toMatchObject({
      created: true,
      job: { status: 'pending', attempts: 0, payload: { reason: 'x' }, scheduledAt: clock.now() },
    });
    const again = await tracker.enqueue({
      type: 'always-fails',
      payload: { reason: 'y' },
      idempotencyKey: 'k',
    });
    expect(again.created).toBe(false);
    expect(again.job).toMatchObject({ id: single.job.id, payload: { reason: 'x' } });
    const bulk = await tracker.enqueueMany(
      Array.from({ length: 50 }, (_, n) => ({ type: 'noop' as const, payload: { n } })),
    );
    expect(bulk.every((r) => r.created)).toBe(true);
    expect(bulk.map((r) => r.job.payload)).toStrictEqual(Array.from({ length: 50 }, (_, n) => ({ n })));
    transcript.enqueued = [single, again, ...bulk];
    // Claim order follows the (random) ids among equals; work in payload order so both runs do the same.
    const order = new Map(bulk.map((r, n) => [r.job.id, n]));
    const byPayload = <X extends { id: string }>(list: X[]) =>
      [...list].sort((a, b) => (order.get(a.id) ?? -1) - (order.get(b.id) ?? -1));

    const claimed = await tracker.fetchReady(100);
    expect(claimed).toHaveLength(51);
    expect(claimed.every((c) => c.attempts === 1)).toBe(true);
    expect(await tracker.fetchReady(100)).toStrictEqual([]);
    transcript.claimed = byPayload(claimed);

    expect(await tracker.startAttempt(single.job.id, 1)).toMatchObject({
      id: single.job.id,
      status: 'running',
    });
    expect(await tracker.startAttempt(single.job.id, 1)).toBeNull();
    const failure = await tracker.markFailed(single.job.id, 1, 'boom');
    expect(failure).toMatchObject({
      status: 'retrying',
      attempt: 1,
      scheduledAt: new Date('2026-03-01T00:02:00Z'),
    });
    transcript.failure = failure;

    const noops = byPayload(claimed.filter((c) => c.id !== single.job.id));
    clock.advance(1500);
    expect(await tracker.markCompleted(noops[0]!.id, 1, { durationMs: 7 })).toBe(true);
    expect(await tracker.markCompleted(noops[0]!.id, 1)).toBe(false); // fenced: already completed
    expect(
      await tracker.completeMany(
        noops.slice(1, 40).map((c) => ({ id: c.id, attempt: c.attempts, durationMs: 3 })),
      ),
    ).toHaveLength(39);
    const released = await tracker.release(
      noops.slice(40, 45).map((c) => ({ id: c.id, attempt: c.attempts })),
    );
    expect(released).toHaveLength(5);
    expect(await tracker.getJob(noops[40]!.id)).toMatchObject({
      status: 'pending',
      attempts: 1,
      maxAttempts: noops[40]!.maxAttempts + 1,
    });

    // Some executors began their attempt and vanished; the others' events never arrived.
    const begun = noops.slice(45, 60);
    for (const c of begun) expect(await tracker.startAttempt(c.id, c.attempts)).not.toBeNull();
    clock.advanceMinutes(10);
    const rescued = await tracker.rescueExpiredLeases();
    expect(rescued.map((r) => r.id).sort()).toStrictEqual(
      noops
        .slice(45)
        .map((c) => c.id)
        .sort(),
    );
    const begunIds = new Set(begun.map((c) => c.id));
    expect(rescued.every((r) => r.undelivered === !begunIds.has(r.id))).toBe(true);
    expect(rescued.every((r) => r.status === (r.undelivered ? 'pending' : 'retrying'))).toBe(true);
    transcript.rescued = byPayload(rescued);

    const cancelled = await tracker.cancel(noops[45]!.id);
    expect(cancelled).toMatchObject({ status: 'cancelled' });
    const retried = await tracker.retry(noops[45]!.id);
    expect(retried).toMatchObject({ status: 'pending', attempts: 1 });
    transcript.cancelled = cancelled;
    transcript.retried = retried;

    const stats = await tracker.stats();
    expect(stats.counts).toContainEqual({ jobType: 'noop', status: 'completed', count: 40 });
    expect(stats.counts).toContainEqual({ jobType: 'always-fails', status: 'retrying', count: 1 });
    expect(stats.queue.depth).toBe(7); // 5 released, 1 retried by the operator, the failed one (due at 00:02)
    transcript.stats = stats;

    const executions = await tracker.getExecutions(single.job.id);
    expect(executions).toStrictEqual([
      expect.objectContaining({ attempt: 1, outcome: 'failed', error: 'boom' }),
    ]);
    expect(executions[0]!.startedAt).toBeInstanceOf(Date);
    transcript.executions = executions;
    transcript.completedExecution = await tracker.getExecutions(noops[0]!.id);
    transcript.jobs = byPayload(await tracker.listJobs({ limit: 100 }));
    lifecycleTranscripts[driverName] = normalise(transcript);
  });

  test('uncounted retries (requested, interrupted) and retention run unchanged', async () => {
    const d = db();
    await t.db.query('TRUNCATE jobs, job_execution_records');
    const clock = new ManualClock('2026-03-01T00:00:00Z');
    const tracker = new JobTracker({ db: d, registry: createTestRegistry(), clock });
    const [later, cut, done] = await tracker.enqueueMany([
      { type: 'noop', payload: { n: 1 }, maxAttempts: 1 },
      { type: 'noop', payload: { n: 2 }, maxAttempts: 1 },
      { type: 'noop', payload: { n: 3 } },
    ]);
    await tracker.fetchReady(3);
    const at = new Date('2026-03-01T01:00:00Z');
    expect(await tracker.markFailed(later!.job.id, 1, 'later', { retryAt: at })).toMatchObject({
      status: 'retrying',
      scheduledAt: at,
    });
    expect(await tracker.markFailed(cut!.job.id, 1, 'interrupted', { interrupted: true })).toMatchObject({
      status: 'retrying',
      scheduledAt: clock.now(),
    });
    expect(await tracker.getJob(cut!.job.id)).toMatchObject({ attempts: 1, maxAttempts: 2 });
    expect((await tracker.getExecutions(cut!.job.id)).map((e) => e.outcome)).toEqual(['interrupted']);
    await tracker.markCompleted(done!.job.id, 1);
    clock.advanceMinutes(60 * 24 * 31);
    const before = new Date(clock.now().getTime() - 30 * 86_400_000);
    expect(await tracker.pruneFinished({ before, statuses: ['completed'], batchSize: 1 })).toBe(1);
    expect(await tracker.getJob(done!.job.id)).toBeNull();
    expect(await tracker.getExecutions(done!.job.id)).toEqual([]);
  });

  test("a local worker's statements run unchanged: eager start, and a claim that says when the next job is due", async () => {
    const d = db();
    await t.db.query('TRUNCATE jobs, job_execution_records');
    const registry = createTestRegistry();
    const tracker = new JobTracker({ db: d, registry });
    const services: TestServices = { runs: [] };
    const worker = new Worker({
      tracker,
      dispatcher: new JobDispatcher(registry, services),
      pollIntervalMs: 60_000,
    });
    await worker.start();
    await worker.idle();
    // Enqueued in the worker's process while it idles: inserted already claimed, run, completed.
    const eager = await tracker.enqueue({ type: 'noop', payload: { n: 1 } });
    expect(eager.job).toMatchObject({ status: 'running', attempts: 1, leaseExpiresAt: expect.any(Date) });
    await worker.idle();
    // Every column of the one-row eager insert travels: a key, a priority; a due time in the past is now.
    const anHourAgo = new Date(Date.now() - 3_600_000);
    const keyed = await tracker.enqueue({
      type: 'noop',
      payload: { n: 4 },
      idempotencyKey: 'eager-key',
      runAt: anHourAgo,
      priority: 7,
      maxAttempts: 3,
    });
    expect(keyed).toMatchObject({ created: true, job: { status: 'running' } });
    expect(keyed.job.scheduledAt).toEqual(keyed.job.createdAt);
    await worker.idle();
    // The key is taken: the eager insert skips it and the enqueue answers with the existing job.
    const again = await tracker.enqueue({ type: 'noop', payload: { n: 5 }, idempotencyKey: 'eager-key' });
    expect(again).toMatchObject({ created: false, job: { id: keyed.job.id } });
    await worker.idle();
    await worker.stop();
    expect(services.runs).toEqual([
      { type: 'noop', payload: { n: 1 }, attempt: 1 },
      { type: 'noop', payload: { n: 4 }, attempt: 1 },
    ]);
    expect(await tracker.getJob(eager.job.id)).toMatchObject({ status: 'completed' });
    expect(await tracker.getJob(keyed.job.id)).toMatchObject({
      status: 'completed',
      idempotencyKey: 'eager-key',
      priority: 7,
      maxAttempts: 3,
      scheduledAt: keyed.job.scheduledAt,
      payload: { n: 4 },
    });
    // The worker's claim: a short one also answers when the next waiting job is due.
    const inAnHour = new Date(Date.now() + 3_600_000);
    const [, later] = await tracker.enqueueMany([
      { type: 'noop', payload: { n: 2 } },
      { type: 'noop', payload: { n: 3 }, runAt: inAnHour },
    ]);
    const claim = await tracker.claimForWorker(5);
    expect(claim.jobs.map((j) => j.payload)).toEqual([{ n: 2 }]);
    expect(claim.nextDueAt).toEqual(later!.job.scheduledAt);
  });
});

test('the job lifecycle gives the same results through both drivers', () => {
  expect(lifecycleTranscripts['data-api']).toBeDefined();
  expect(lifecycleTranscripts['data-api']).toStrictEqual(lifecycleTranscripts.pg);
});

describe('Data API driver specifics', () => {
  test('migrations apply through the Data API, statement by statement; a second run applies nothing', async () => {
    const fresh = await createTestDatabase({ migrate: false });
    try {
      const d = dataApi(fresh.name);
      expect(await migrate(d)).toStrictEqual((await loadMigrations()).map((m) => m.name));
      expect(await migrate(d)).toStrictEqual([]);
      const tables = await fresh.db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_tables WHERE tablename IN ('jobs', 'job_execution_records', 'lana_migrations')",
      );
      expect(tables.rows[0]!.n).toBe(3);
    } finally {
      await fresh.drop();
    }
  });

  test('calls per operation: one Execute per query; Begin, one Execute per statement, Commit per transaction', async () => {
    fixture.resetCounts();
    const d = dataApi(t.name);
    await d.query('SELECT 1');
    await d.transaction(async (tx) => {
      await tx.query('SELECT 1');
      await tx.query('SELECT 2');
    });
    expect(fixture.counts).toStrictEqual({
      Execute: 3,
      BatchExecute: 0,
      BeginTransaction: 1,
      CommitTransaction: 1,
      RollbackTransaction: 0,
    });
    expect(fixture.openTransactions()).toBe(0);
  });

  test('a resuming cluster is retried with backoff, within the budget', async () => {
    fixture.resetCounts();
    fixture.injectFault({
      error: 'DatabaseResumingException',
      message: 'The database is resuming after being auto-paused. Please wait a few seconds and try again.',
      times: 2,
      operation: 'Execute',
    });
    const res = await dataApi(t.name).query<{ one: number }>('SELECT 1 AS one');
    expect(res.rows).toStrictEqual([{ one: 1 }]);
    expect(fixture.counts.Execute).toBe(3);
  });

  test('a resuming cluster past the budget surfaces the error', async () => {
    fixture.injectFault({ error: 'DatabaseResumingException', times: 1000, operation: 'Execute' });
    try {
      await expect(dataApi(t.name, 200).query('SELECT 1')).rejects.toMatchObject({
        name: 'DatabaseResumingException',
      });
    } finally {
      fixture.clearFaults();
    }
  });

  test('BeginTransaction is retried while resuming too', async () => {
    fixture.injectFault({ error: 'DatabaseResumingException', times: 1, operation: 'BeginTransaction' });
    const n = await dataApi(t.name).transaction(
      async (tx) => (await tx.query<{ n: number }>('SELECT 5 AS n')).rows[0]!.n,
    );
    expect(n).toBe(5);
  });

  test('an SQL error aborts the Data API transaction; the driver rolls back and rethrows the original error', async () => {
    await t.db.query('DELETE FROM contract');
    fixture.resetCounts();
    const err = await dataApi(t.name)
      .transaction(async (tx) => {
        await tx.query("INSERT INTO contract (id, label) VALUES (gen_random_uuid(), 'lost')");
        await tx.query('INSERT INTO contract (id) VALUES (CAST(:id AS uuid)), (CAST(:id AS uuid))', {
          id: uuid(ID),
        });
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatabaseError);
    expect((err as DatabaseError).isUniqueViolation).toBe(true);
    expect(fixture.counts.RollbackTransaction).toBe(1);
    expect(fixture.openTransactions()).toBe(0);
    expect((await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM contract')).rows[0]!.n).toBe(0);
  });

  test('a response over 1 MiB is a clear error from the driver', async () => {
    // Rows under the 64 KB row limit, together over the 1 MiB response limit.
    await expect(
      dataApi(t.name).query("SELECT repeat('x', 50000) AS big FROM generate_series(1, 22)"),
    ).rejects.toThrow(/exceeded the Data API's 1 MiB response limit/);
    // Just under the limit still comes back.
    const res = await dataApi(t.name).query<{ big: string }>(
      "SELECT repeat('x', 50000) AS big FROM generate_series(1, 20)",
    );
    expect(res.rows.map((r) => r.big.length)).toEqual(Array(20).fill(50_000));
  });

  test('the largest enqueue answers within the Data API limits: 10,000 keyed jobs, then 100 of their keys again', async () => {
    await t.db.query('TRUNCATE jobs, job_execution_records');
    const tracker = new JobTracker({ db: dataApi(t.name), registry: createTestRegistry() });
    const jobs = Array.from({ length: 10_000 }, (_, n) => ({
      type: 'noop' as const,
      payload: { n },
      idempotencyKey: `bulk-${n}`,
    }));
    const first = await tracker.enqueueMany(jobs);
    expect(first.every((r) => r.created && r.job.status === 'pending')).toBe(true);
    expect(new Set(first.map((r) => r.job.id)).size).toBe(10_000);
    // Re-enqueued keys come back as the existing jobs (looked up a few at a time under the 1 MiB answer).
    const again = await tracker.enqueueMany([...jobs.slice(0, 100), { type: 'noop', payload: { n: -1 } }]);
    expect(again.slice(0, 100).map((r) => [r.created, r.job.id])).toEqual(
      first.slice(0, 100).map((r) => [false, r.job.id]),
    );
    expect(again[100]!.created).toBe(true);
    expect(await countJobs(t.db)).toBe(10_001);
  });

  test('an enqueue over the 4 MiB request limit is split into several statements in one transaction', async () => {
    await t.db.query('TRUNCATE jobs, job_execution_records');
    const tracker = new JobTracker({ db: dataApi(t.name), registry: createTestRegistry() });
    // Quotes are escaped twice on the way (in the jobs' document, then in the request's JSON): ~4.4 KB each.
    const reason = `"quoted" ${'"'.repeat(1000)}`;
    const jobs = Array.from({ length: 2_000 }, (_, n) => ({
      type: 'always-fails' as const,
      payload: { reason: `${n} ${reason}` },
      // The same key at both ends of the batch: the second, in a later statement, finds the first.
      ...(n === 0 || n === 1_999 ? { idempotencyKey: 'both-ends' } : {}),
    }));
    fixture.resetCounts();
    const results = await tracker.enqueueMany(jobs);
    expect(fixture.counts.BeginTransaction).toBe(1);
    expect(fixture.counts.Execute).toBeGreaterThanOrEqual(3); // ~8.8 MB in at most 4 MiB each
    expect(fixture.counts.CommitTransaction).toBe(1);
    expect(results.filter((r) => r.created)).toHaveLength(1_999);
    expect(results[1_999]).toMatchObject({ created: false, job: { id: results[0]!.job.id } });
    expect(await countJobs(t.db)).toBe(1_999);
    const stored = await t.db.query<{ payload: { reason: string } }>(
      'SELECT payload FROM jobs WHERE id = CAST(:id AS uuid)',
      { id: results[1_998]!.job.id },
    );
    expect(stored.rows[0]!.payload.reason).toBe(`1998 ${reason}`);
  });

  test('a split enqueue is all or nothing: a failure in its last statement writes none of the batch', async () => {
    await t.db.query('TRUNCATE jobs, job_execution_records');
    await t.db.query(`CREATE FUNCTION contract_refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.payload->>'reason' = 'boom' THEN RAISE EXCEPTION 'refused by the test'; END IF;
        RETURN NEW;
      END $$`);
    await t.db.query(
      'CREATE TRIGGER contract_refuse_boom BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION contract_refuse_boom()',
    );
    try {
      const tracker = new JobTracker({ db: dataApi(t.name), registry: createTestRegistry() });
      const jobs = Array.from({ length: 1_500 }, (_, n) => ({
        type: 'always-fails' as const,
        payload: { reason: n === 1_499 ? 'boom' : '"'.repeat(1000) },
      }));
      fixture.resetCounts();
      await expect(tracker.enqueueMany(jobs)).rejects.toThrow(/refused by the test/);
      expect(fixture.counts.Execute).toBeGreaterThanOrEqual(2);
      expect(fixture.counts.RollbackTransaction).toBe(1);
      expect(await countJobs(t.db)).toBe(0);
    } finally {
      await t.db.query('DROP TRIGGER contract_refuse_boom ON jobs');
      await t.db.query('DROP FUNCTION contract_refuse_boom()');
    }
  });

  test('a string sent without a type hint is varchar, as on AWS: the SQL must cast it', async () => {
    await t.db.query('DELETE FROM contract');
    // pg lets PostgreSQL infer the type; the Data API binds an unhinted stringValue as varchar.
    const viaPg = await t.db.query('INSERT INTO contract (id) VALUES (:id)', { id: OTHER_ID });
    expect(viaPg.rowCount).toBe(1);
    const err = await dataApi(t.name)
      .query('INSERT INTO contract (id) VALUES (:id)', { id: ID })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatabaseError);
    expect((err as DatabaseError).code).toBe('42804');
    expect((err as DatabaseError).message).toMatch(
      /is of type uuid but expression is of type character varying/,
    );
    const cast = await dataApi(t.name).query('INSERT INTO contract (id) VALUES (CAST(:id AS uuid))', {
      id: ID,
    });
    expect(cast.rowCount).toBe(1);
  });
});
