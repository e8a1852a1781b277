import {
  BatchExecuteStatementCommand,
  BeginTransactionCommand,
  CommitTransactionCommand,
  DatabaseErrorException,
  ExecuteStatementCommand,
  type ExecuteStatementCommandInput,
  RDSDataClient,
  RollbackTransactionCommand,
  StatementTimeoutException,
  TransactionNotFoundException,
} from '@aws-sdk/client-rds-data';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { dataApiDatabaseFromEnv } from '../../shared/db/data-api-driver.js';
import { type DataApiFixture, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * The local Data API fixture, spoken to with the real SDK client: it must behave like the service where
 * the job system depends on it (aws-facts.md §7 fidelity checklist), or the contract tests prove nothing.
 */
let t: TestDatabase;
let fixture: DataApiFixture;
let client: RDSDataClient;
const ARNS = {
  resourceArn: 'arn:aws:rds:us-east-1:123456789012:cluster:lana-jobs',
  secretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:lana-jobs',
};

function sdkClient(endpoint: string, maxAttempts = 1): RDSDataClient {
  return new RDSDataClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
    maxAttempts,
  });
}
const execute = (input: Omit<ExecuteStatementCommandInput, 'resourceArn' | 'secretArn'>, c = client) =>
  c.send(new ExecuteStatementCommand({ ...ARNS, database: t.name, ...input }));
const failure = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected the call to fail');
    },
    (e: unknown) => e as Error,
  );

beforeAll(async () => {
  t = await createTestDatabase({ migrate: false });
  fixture = await startDataApiFixture(t.url);
  client = sdkClient(fixture.endpoint);
  await t.db.query('CREATE TABLE items (id integer PRIMARY KEY, label text)');
});
afterAll(async () => {
  client?.destroy();
  await fixture?.close();
  await t?.drop();
});

describe('requests the Data API rejects', () => {
  test.each([
    ['multiple statements', { sql: 'SELECT 1; SELECT 2' }],
    [
      'an arrayValue parameter',
      {
        sql: 'SELECT :ids AS ids',
        parameters: [{ name: 'ids', value: { arrayValue: { longValues: [1, 2] } } }],
      },
    ],
    ['the schema parameter', { sql: 'SELECT 1', schema: 'public' }],
    [
      'a TIMESTAMP hint in ISO form',
      {
        sql: 'SELECT :at AS at',
        parameters: [
          { name: 'at', value: { stringValue: '2026-01-01T00:00:00.000Z' }, typeHint: 'TIMESTAMP' as const },
        ],
      },
    ],
    ['sql over 65,536 characters', { sql: `SELECT 1 ${' '.repeat(65_536)}` }],
  ])('%s: ValidationException (not a modelled SDK class, so by name)', async (_what, input) => {
    const err = await failure(execute(input));
    expect(err.name).toBe('ValidationException');
  });

  test('a trailing semicolon is still one statement', async () => {
    const res = await execute({ sql: 'SELECT 1 AS one;' });
    expect(res.records).toStrictEqual([[{ longValue: 1 }]]);
  });
});

describe('results in records mode', () => {
  test('fields by type, column metadata, long and decimal return types', async () => {
    const sql = `SELECT 9007199254740993::int8 AS big, 7::int4 AS small, 12.50::numeric AS amount, 1.5::float8 AS f,
      true AS ok, TIMESTAMPTZ '2026-01-01 12:00:00.5+02' AS at, '{"a":1}'::jsonb AS doc, DATE '2026-02-28' AS day,
      '\\xdeadbeef'::bytea AS blob, NULL::text AS nothing, ARRAY[1,2] AS ints`;
    const asStrings = await execute({
      sql,
      includeResultMetadata: true,
      resultSetOptions: { longReturnType: 'STRING', decimalReturnType: 'STRING' },
    });
    expect(asStrings.records![0]).toStrictEqual([
      { stringValue: '9007199254740993' },
      { stringValue: '7' },
      { stringValue: '12.50' },
      { doubleValue: 1.5 },
      { booleanValue: true },
      { stringValue: '2026-01-01 10:00:00.5' }, // UTC, no offset
      { stringValue: '{"a": 1}' },
      { stringValue: '2026-02-28' },
      { blobValue: new Uint8Array([0xde, 0xad, 0xbe, 0xef]) },
      { isNull: true },
      { arrayValue: { stringValues: ['1', '2'] } },
    ]);
    expect(asStrings.columnMetadata!.map((c) => [c.label, c.typeName])).toStrictEqual([
      ['big', 'int8'],
      ['small', 'int4'],
      ['amount', 'numeric'],
      ['f', 'float8'],
      ['ok', 'bool'],
      ['at', 'timestamptz'],
      ['doc', 'jsonb'],
      ['day', 'date'],
      ['blob', 'bytea'],
      ['nothing', 'text'],
      ['ints', '_int4'],
    ]);
    const defaults = await execute({ sql: 'SELECT 12::int8 AS n, 2.5::numeric AS d' });
    expect(defaults.columnMetadata).toBeUndefined();
    expect(defaults.records).toStrictEqual([[{ longValue: 12 }, { stringValue: '2.5' }]]);
    const doubles = await execute({
      sql: 'SELECT 2.5::numeric AS d, 3.0::numeric AS l',
      resultSetOptions: { decimalReturnType: 'DOUBLE_OR_LONG' },
    });
    expect(doubles.records).toStrictEqual([[{ doubleValue: 2.5 }, { doubleValue: 3 }]]);
  });

  test('money and geometric types are unsupported results', async () => {
    const err = await failure(execute({ sql: "SELECT '1.00'::money AS m" }));
    expect(err.name).toBe('UnsupportedResultException');
  });

  test('numberOfRecordsUpdated for DML; records for RETURNING', async () => {
    await t.db.query('DELETE FROM items');
    const inserted = await execute({ sql: "INSERT INTO items SELECT g, 'x' FROM generate_series(1, 4) g" });
    expect(inserted.numberOfRecordsUpdated).toBe(4);
    expect(inserted.records).toBeUndefined();
    const returned = await execute({ sql: 'DELETE FROM items WHERE id > 2 RETURNING id' });
    expect(returned.records).toStrictEqual([[{ longValue: 3 }], [{ longValue: 4 }]]);
  });

  test('an SQL error is a DatabaseErrorException whose message carries the SQLSTATE', async () => {
    await t.db.query('DELETE FROM items');
    await execute({ sql: 'INSERT INTO items VALUES (1)' });
    const err = await failure(execute({ sql: 'INSERT INTO items VALUES (1)' }));
    expect(err).toBeInstanceOf(DatabaseErrorException);
    expect(err.message).toMatch(/duplicate key value violates unique constraint "items_pkey"/);
    expect(err.message).toMatch(/SQLState: 23505$/);
  });

  test('responses over 1 MiB fail, though every row is under 64 KB', async () => {
    const err = await failure(
      execute({ sql: "SELECT repeat('x', 50000) AS big FROM generate_series(1, 22)" }),
    );
    expect(err.message).toMatch(/more than the allowed response size limit/);
  });

  test('a row over 64 KB fails, one at 64 KB comes back', async () => {
    const over = await failure(execute({ sql: "SELECT repeat('x', 32000) AS a, repeat('y', 32001) AS b" }));
    expect(over.name).toBe('DatabaseErrorException');
    expect(over.message).toMatch(/per-row limit/);
    const at = await execute({ sql: "SELECT repeat('x', 32000) AS a, repeat('y', 32000) AS b" });
    expect(at.records![0]![1]!.stringValue).toHaveLength(32_000);
  });
});

describe('transactions', () => {
  const begin = async (c = client) =>
    (await c.send(new BeginTransactionCommand({ ...ARNS, database: t.name }))).transactionId!;

  test('commit and rollback report their status strings', async () => {
    await t.db.query('DELETE FROM items');
    const committed = await begin();
    await execute({ sql: 'INSERT INTO items VALUES (1)', transactionId: committed });
    // Not visible outside the transaction before the commit.
    expect((await t.db.query('SELECT * FROM items')).rowCount).toBe(0);
    const commit = await client.send(new CommitTransactionCommand({ ...ARNS, transactionId: committed }));
    expect(commit.transactionStatus).toBe('Transaction Committed');
    const rolledBack = await begin();
    await execute({ sql: 'INSERT INTO items VALUES (2)', transactionId: rolledBack });
    const rollback = await client.send(
      new RollbackTransactionCommand({ ...ARNS, transactionId: rolledBack }),
    );
    expect(rollback.transactionStatus).toBe('Rollback Complete');
    expect((await t.db.query('SELECT id FROM items')).rows).toStrictEqual([{ id: 1 }]);
    expect(fixture.openTransactions()).toBe(0);
  });

  test('an SQL error aborts the transaction: later calls find none', async () => {
    const id = await begin();
    await failure(execute({ sql: 'SELECT 1 / 0', transactionId: id }));
    const err = await failure(execute({ sql: 'SELECT 1', transactionId: id }));
    expect(err).toBeInstanceOf(TransactionNotFoundException);
    expect(fixture.openTransactions()).toBe(0);
  });

  test('a validation error does not abort the transaction', async () => {
    const id = await begin();
    await failure(execute({ sql: 'SELECT 1; SELECT 2', transactionId: id }));
    expect((await execute({ sql: 'SELECT 1 AS one', transactionId: id })).records).toHaveLength(1);
    await client.send(new RollbackTransactionCommand({ ...ARNS, transactionId: id }));
  });

  test('a concurrent call on one transaction is rejected, the running one completes', async () => {
    const id = await begin();
    const slow = execute({ sql: 'SELECT 7 AS n FROM pg_sleep(0.3)', transactionId: id });
    await new Promise((r) => setTimeout(r, 100));
    const err = await failure(execute({ sql: 'SELECT 1', transactionId: id }));
    expect(err).toBeInstanceOf(DatabaseErrorException);
    expect(err.message).toBe('Transaction is still running a query');
    expect((await slow).records).toStrictEqual([[{ longValue: 7 }]]);
    const commit = await client.send(new CommitTransactionCommand({ ...ARNS, transactionId: id }));
    expect(commit.transactionStatus).toBe('Transaction Committed');
  });

  test('an idle transaction expires and is rolled back', async () => {
    await t.db.query('DELETE FROM items');
    const quick = await startDataApiFixture(t.url, { transactionIdleMs: 150 });
    const c = sdkClient(quick.endpoint);
    try {
      const id = await begin(c);
      await execute({ sql: 'INSERT INTO items VALUES (9)', transactionId: id }, c);
      await new Promise((r) => setTimeout(r, 400));
      expect(quick.openTransactions()).toBe(0);
      const err = await failure(c.send(new CommitTransactionCommand({ ...ARNS, transactionId: id })));
      expect(err).toBeInstanceOf(TransactionNotFoundException);
      expect((await t.db.query('SELECT * FROM items')).rowCount).toBe(0);
    } finally {
      c.destroy();
      await quick.close();
    }
  });

  test('a statement over the time limit is cancelled (StatementTimeoutException)', async () => {
    const quick = await startDataApiFixture(t.url, { statementTimeoutMs: 100 });
    const c = sdkClient(quick.endpoint);
    try {
      const err = await failure(execute({ sql: 'SELECT pg_sleep(2)' }, c));
      expect(err).toBeInstanceOf(StatementTimeoutException);
    } finally {
      c.destroy();
      await quick.close();
    }
  });
});

describe('BatchExecute', () => {
  const batch = (labels: (string | number)[]) =>
    client.send(
      new BatchExecuteStatementCommand({
        ...ARNS,
        database: t.name,
        sql: 'INSERT INTO items (id, label) VALUES (:id, :label)',
        parameterSets: labels.map((label, i) => [
          { name: 'id', value: { longValue: typeof label === 'number' ? label : i + 1 } },
          { name: 'label', value: { stringValue: String(label) } },
        ]),
      }),
    );

  test('runs one statement per parameter set, with no result set', async () => {
    await t.db.query('DELETE FROM items');
    const res = await batch(['a', 'b', 'c']);
    expect(res.updateResults).toHaveLength(3);
    expect((await t.db.query('SELECT label FROM items ORDER BY id')).rows).toStrictEqual([
      { label: 'a' },
      { label: 'b' },
      { label: 'c' },
    ]);
  });

  test('outside a transaction a failing set undoes the batch', async () => {
    await t.db.query('DELETE FROM items');
    const err = await failure(batch([5, 6, 5]));
    expect(err).toBeInstanceOf(DatabaseErrorException);
    expect((await t.db.query('SELECT * FROM items')).rowCount).toBe(0);
  });
});

describe('fault injection and call counts', () => {
  test('injected faults fail the next calls of one operation, and every call is counted', async () => {
    fixture.resetCounts();
    fixture.injectFault({ error: 'DatabaseResumingException', times: 2, operation: 'Execute' });
    expect((await failure(execute({ sql: 'SELECT 1' }))).name).toBe('DatabaseResumingException');
    expect((await failure(execute({ sql: 'SELECT 1' }))).name).toBe('DatabaseResumingException');
    expect((await execute({ sql: 'SELECT 1 AS one' })).records).toHaveLength(1);
    expect(fixture.counts.Execute).toBe(3);
  });

  test('a 5xx fault is retried by the SDK itself (unlike DatabaseResumingException)', async () => {
    const retrying = sdkClient(fixture.endpoint, 3);
    try {
      fixture.resetCounts();
      fixture.injectFault({
        error: 'DatabaseUnavailableException',
        status: 504,
        times: 1,
        operation: 'Execute',
      });
      expect((await execute({ sql: 'SELECT 1 AS one' }, retrying)).records).toHaveLength(1);
      expect(fixture.counts.Execute).toBe(2);
      fixture.resetCounts();
      fixture.injectFault({ error: 'DatabaseResumingException', times: 1, operation: 'Execute' });
      expect((await failure(execute({ sql: 'SELECT 1' }, retrying))).name).toBe('DatabaseResumingException');
      expect(fixture.counts.Execute).toBe(1);
    } finally {
      fixture.clearFaults();
      retrying.destroy();
    }
  });
});

describe('dataApiDatabaseFromEnv', () => {
  test('names every missing variable', () => {
    expect(() => dataApiDatabaseFromEnv({ DATA_API_DATABASE: 'x' })).toThrow(
      'the RDS Data API needs DATA_API_RESOURCE_ARN, DATA_API_SECRET_ARN',
    );
  });

  test('configured from the environment, it talks to the endpoint given', async () => {
    const db = dataApiDatabaseFromEnv(
      {
        DATA_API_RESOURCE_ARN: ARNS.resourceArn,
        DATA_API_SECRET_ARN: ARNS.secretArn,
        DATA_API_DATABASE: t.name,
      },
      client,
    );
    expect(db.driverName).toBe('data-api');
    expect((await db.query<{ n: number }>('SELECT 3 AS n')).rows).toStrictEqual([{ n: 3 }]);
    await db.close(); // does not destroy a client it was given
    expect((await execute({ sql: 'SELECT 1' })).records).toHaveLength(1);
  });
});
