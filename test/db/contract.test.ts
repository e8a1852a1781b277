import { RDSDataClient } from '@aws-sdk/client-rds-data';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import { loadMigrations, migrate } from '../../shared/db/migrate.js';
import { type Database, DatabaseError, date, decimal, json, uuid } from '../../shared/db/port.js';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { type DataApiFixture, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { createTestRegistry } from '../support/test-job-types.js';

/**
 * One contract, two drivers: every statement shape the job system uses must behave identically through
 * node-postgres and through the RDS Data API (the real SDK client against the local Data API fixture).
 */
let t: TestDatabase;
let fixture: DataApiFixture;
const drivers: Record<string, () => Database> = {};

function dataApi(database: string, options: { resumeBudgetMs?: number } = {}): DataApiDatabase {
  return new DataApiDatabase({
    resourceArn: 'arn:aws:rds:us-east-1:123456789012:cluster:lana-jobs',
    secretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:lana-jobs',
    database,
    resumeBudgetMs: options.resumeBudgetMs ?? 5000,
    client: new RDSDataClient({
      endpoint: fixture.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      maxAttempts: 1,
    }),
  });
}

beforeAll(async () => {
  t = await createTestDatabase();
  fixture = await startDataApiFixture(t.url);
  await t.db.query(`CREATE TABLE contract (
    id uuid PRIMARY KEY, n integer, big bigint, amount numeric(20, 4), ok boolean, at timestamptz,
    day date, doc jsonb, label text, ratio float8)`);
  drivers.pg = () => t.db;
  drivers['data-api'] = () => dataApi(t.name);
});
afterAll(async () => {
  await fixture.close();
  await t.drop();
});

const ID = '01a2246e-c662-7e2a-aa1f-6e8bb5784e10';

describe.each(['pg', 'data-api'])('database contract: %s driver', (driverName) => {
  const db = () => drivers[driverName]!();

  test('every column type round-trips to the same JavaScript value', async () => {
    const d = db();
    await d.query('DELETE FROM contract');
    const at = new Date('2026-11-28T22:05:01.123Z');
    const doc = {
      a: [1, 'two', { three: null }],
      unicode: 'préstamo 借款 🏦',
      sql: "'; DROP TABLE jobs; --",
    };
    const res = await d.query(
      `INSERT INTO contract VALUES (CAST(:id AS uuid), :n, :big, CAST(:amount AS numeric), :ok, CAST(:at AS timestamptz),
         CAST(:day AS date), CAST(:doc AS jsonb), :label, :ratio)
       RETURNING *`,
      {
        id: uuid(ID),
        n: -42,
        big: 9_007_199_254_740_993n, // 2^53 + 1: not representable as a JS number
        amount: decimal('12345678901234.5678'),
        ok: true,
        at,
        day: date('2026-02-28'),
        doc: json(doc),
        label: "it's 'quoted' :not_a_param",
        ratio: 1.25,
      },
    );
    expect(res.rowCount).toBe(1);
    expect(res.rows[0]).toEqual({
      id: ID,
      n: -42,
      big: 9_007_199_254_740_993n,
      amount: '12345678901234.5678',
      ok: true,
      at,
      day: '2026-02-28',
      doc,
      label: "it's 'quoted' :not_a_param",
      ratio: 1.25,
    });
  });

  test('NULLs, a repeated parameter and ::casts next to parameters', async () => {
    const d = db();
    const res = await d.query<{ a: number | null; b: string; c: number; d: boolean }>(
      "SELECT CAST(:x AS integer) AS a, 'x::y' AS b, :n::int + :n::int AS c, CAST(:flag AS boolean) AS d",
      { x: null, n: 21, flag: false },
    );
    expect(res.rows).toEqual([{ a: null, b: 'x::y', c: 42, d: false }]);
  });

  test('lists travel as JSON and are unpacked in SQL (no array parameters)', async () => {
    const d = db();
    const res = await d.query<{ id: string; n: number }>(
      `SELECT x.id, x.n FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS x(id uuid, n integer) ORDER BY x.n`,
      {
        items: json([
          { id: ID, n: 2 },
          { id: '00000000-0000-4000-8000-000000000000', n: 1 },
        ]),
      },
    );
    expect(res.rows).toEqual([
      { id: '00000000-0000-4000-8000-000000000000', n: 1 },
      { id: ID, n: 2 },
    ]);
  });

  test('rowCount of DML without RETURNING', async () => {
    const d = db();
    await d.query('DELETE FROM contract');
    await d.query('INSERT INTO contract (id, n) SELECT gen_random_uuid(), g FROM generate_series(1, 3) g');
    const res = await d.query('UPDATE contract SET n = n + 1 WHERE n >= :min', { min: 2 });
    expect(res).toEqual({ rows: [], rowCount: 2 });
  });

  test('transactions commit and roll back', async () => {
    const d = db();
    await d.query('DELETE FROM contract');
    await d.transaction(async (tx) => {
      await tx.query("INSERT INTO contract (id, label) VALUES (gen_random_uuid(), 'kept')");
      await tx.query("INSERT INTO contract (id, label) VALUES (gen_random_uuid(), 'kept too')");
    });
    await expect(
      d.transaction(async (tx) => {
        await tx.query("INSERT INTO contract (id, label) VALUES (gen_random_uuid(), 'dropped')");
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    const res = await d.query<{ n: number }>('SELECT count(*)::int AS n FROM contract');
    expect(res.rows[0]!.n).toBe(2);
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
  });

  test('a missing parameter is a clear error', async () => {
    await expect(db().query('SELECT :a AS a, :b AS b', { a: 1 })).rejects.toThrow(
      'SQL parameter :b was not given',
    );
  });

  test('the job lifecycle runs unchanged', async () => {
    const d = db();
    await t.db.query('TRUNCATE jobs, job_executions');
    const clock = new ManualClock('2026-03-01T00:00:00Z');
    const tracker = new JobTracker({ db: d, registry: createTestRegistry(), clock });
    const { job } = await tracker.enqueue({
      type: 'always-fails',
      payload: { reason: 'x' },
      idempotencyKey: 'k',
    });
    expect(
      (await tracker.enqueue({ type: 'always-fails', payload: { reason: 'y' }, idempotencyKey: 'k' }))
        .created,
    ).toBe(false);
    await tracker.enqueueMany(
      Array.from({ length: 50 }, (_, n) => ({ type: 'noop' as const, payload: { n } })),
    );
    const claimed = await tracker.fetchReady(100);
    expect(claimed).toHaveLength(51);
    const first = claimed.find((c) => c.id === job.id)!;
    expect(await tracker.startAttempt(job.id, 1)).toMatchObject({ id: job.id, status: 'running' });
    expect(await tracker.startAttempt(job.id, 1)).toBeNull();
    const failure = await tracker.markFailed(job.id, first.attempts, 'boom');
    expect(failure).toMatchObject({ status: 'retrying', scheduledAt: new Date('2026-03-01T00:02:00Z') });
    const noops = claimed.filter((c) => c.id !== job.id);
    expect(
      await tracker.completeMany(
        noops.slice(0, 40).map((c) => ({ id: c.id, attempt: c.attempts, durationMs: 3 })),
      ),
    ).toHaveLength(40);
    expect(
      await tracker.release(noops.slice(40, 45).map((c) => ({ id: c.id, attempt: c.attempts }))),
    ).toHaveLength(5);
    clock.advanceMinutes(10);
    expect(await tracker.rescueExpiredLeases()).toHaveLength(5);
    expect(await tracker.cancel(noops[45]!.id)).toMatchObject({ status: 'cancelled' });
    const retried = await tracker.retry(noops[45]!.id);
    expect(retried).toMatchObject({ status: 'pending', attempts: 1 });
    const stats = await tracker.stats();
    expect(stats.counts.find((c) => c.status === 'completed')).toMatchObject({ count: 40 });
    const executions = await tracker.getExecutions(job.id);
    expect(executions).toEqual([expect.objectContaining({ attempt: 1, outcome: 'failed', error: 'boom' })]);
    expect(executions[0]!.startedAt).toBeInstanceOf(Date);
  });
});

describe('Data API specifics', () => {
  test('migrations apply through the Data API, statement by statement; a second run applies nothing', async () => {
    const fresh = await createTestDatabase({ migrate: false });
    try {
      const d = dataApi(fresh.name);
      expect(await migrate(d)).toEqual((await loadMigrations()).map((m) => m.name));
      expect(await migrate(d)).toEqual([]);
    } finally {
      await fresh.drop();
    }
  });

  test('a resuming cluster is retried with backoff', async () => {
    fixture.injectFault({
      error: 'DatabaseResumingException',
      message: 'The database is resuming',
      times: 2,
      operation: 'Execute',
    });
    const res = await dataApi(t.name).query<{ one: number }>('SELECT 1 AS one');
    expect(res.rows).toEqual([{ one: 1 }]);
  });

  test('a resuming cluster past the budget surfaces the error', async () => {
    fixture.injectFault({
      error: 'DatabaseResumingException',
      message: 'The database is resuming',
      times: 50,
      operation: 'Execute',
    });
    await expect(dataApi(t.name, { resumeBudgetMs: 300 }).query('SELECT 1')).rejects.toMatchObject({
      name: 'DatabaseResumingException',
    });
    fixture.clearFaults();
  });

  test('an SQL error aborts the transaction, and the driver rolls back', async () => {
    await t.db.query('DELETE FROM contract');
    const d = dataApi(t.name);
    await expect(
      d.transaction(async (tx) => {
        await tx.query("INSERT INTO contract (id, label) VALUES (gen_random_uuid(), 'lost')");
        await tx.query('SELECT 1 / 0');
      }),
    ).rejects.toMatchObject({ code: '22012' });
    expect((await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM contract')).rows[0]!.n).toBe(0);
  });

  test('the fixture rejects what the Data API rejects', async () => {
    const client = new RDSDataClient({
      endpoint: fixture.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      maxAttempts: 1,
    });
    const { ExecuteStatementCommand } = await import('@aws-sdk/client-rds-data');
    const base = { resourceArn: 'arn', secretArn: 'arn', database: t.name };
    await expect(
      client.send(new ExecuteStatementCommand({ ...base, sql: 'SELECT 1; SELECT 2' })),
    ).rejects.toMatchObject({ name: 'ValidationException' });
    await expect(
      client.send(
        new ExecuteStatementCommand({
          ...base,
          sql: 'SELECT :ids AS ids',
          parameters: [{ name: 'ids', value: { arrayValue: { longValues: [1, 2] } } }],
        }),
      ),
    ).rejects.toMatchObject({ name: 'ValidationException' });
    await expect(
      client.send(
        new ExecuteStatementCommand({
          ...base,
          sql: 'SELECT repeat(:s, 1100000) AS big',
          parameters: [{ name: 's', value: { stringValue: 'x' } }],
        }),
      ),
    ).rejects.toThrow(/response size/);
    client.destroy();
  });

  test('a response over 1 MiB is a clear error from the driver', async () => {
    await expect(dataApi(t.name).query("SELECT repeat('x', 1100000) AS big")).rejects.toThrow(
      /1 MiB response limit/,
    );
  });
});
