import { ExecuteStatementCommand, RDSDataClient } from '@aws-sdk/client-rds-data';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import { parseNamedParams } from '../../shared/db/named-params.js';
import { DatabaseError } from '../../shared/db/port.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { type DataApiFixture, scanPlaceholders, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { createTestRegistry } from '../support/test-job-types.js';

/** The Data API during a password rotation, in a session that is not in UTC, and the fixture's own parser. */
const ARNS = {
  resourceArn: 'arn:aws:rds:us-east-1:123456789012:cluster:lana-jobs',
  secretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:lana-app',
};
/** What the service answers while the secret and the database disagree on the password. */
const AUTH_FAILURE = {
  error: 'DatabaseErrorException',
  message: 'FATAL: password authentication failed for user "lana_app"; SQLState: 28P01',
};

let t: TestDatabase;
let fixture: DataApiFixture;
let client: RDSDataClient;
/** A fixture whose sessions run at UTC+14 (no daylight saving): any local-time reading is 14 hours off. */
let farEast: DataApiFixture;
let farEastClient: RDSDataClient;

const sdkClient = (endpoint: string) =>
  new RDSDataClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
    maxAttempts: 1,
  });
const driver = (c: RDSDataClient) =>
  new DataApiDatabase({ ...ARNS, database: t.name, client: c, authRetry: { retries: 3, initialDelayMs: 5 } });

beforeAll(async () => {
  t = await createTestDatabase();
  fixture = await startDataApiFixture(t.url);
  client = sdkClient(fixture.endpoint);
  farEast = await startDataApiFixture(t.url, { sessionTimeZone: 'Pacific/Kiritimati' });
  farEastClient = sdkClient(farEast.endpoint);
});
afterAll(async () => {
  client?.destroy();
  farEastClient?.destroy();
  await fixture?.close();
  await farEast?.close();
  await t?.drop();
});
beforeEach(async () => {
  fixture.clearFaults();
  fixture.resetCounts();
  await t.db.query('TRUNCATE jobs, job_execution_records');
});

describe('an authentication failure during a rotation', () => {
  test('outside a transaction is retried briefly, then succeeds', async () => {
    fixture.injectFault({ ...AUTH_FAILURE, times: 2, operation: 'Execute' });
    const res = await driver(client).query<{ one: number }>('SELECT 1 AS one');
    expect(res.rows).toEqual([{ one: 1 }]);
    expect(fixture.counts.Execute).toBe(3);
  });

  test('the retry is bounded: past it the error comes through with its SQLSTATE', async () => {
    fixture.injectFault({ ...AUTH_FAILURE, times: 10, operation: 'Execute' });
    const err = await driver(client)
      .query('SELECT 1')
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(DatabaseError);
    expect((err as DatabaseError).code).toBe('28P01');
    expect(fixture.counts.Execute).toBe(4);
  });

  test('beginning a transaction is retried too (nothing ran yet)', async () => {
    fixture.injectFault({ ...AUTH_FAILURE, times: 1, operation: 'BeginTransaction' });
    await driver(client).transaction((tx) => tx.query('SELECT 1'));
    expect(fixture.counts.BeginTransaction).toBe(2);
    expect(fixture.openTransactions()).toBe(0);
  });

  test('inside a transaction it is not retried: the transaction fails as a whole', async () => {
    const db = driver(client);
    await expect(
      db.transaction(async (tx) => {
        await tx.query('SELECT 1');
        fixture.injectFault({ ...AUTH_FAILURE, times: 1, operation: 'Execute' });
        await tx.query('SELECT 2');
      }),
    ).rejects.toBeInstanceOf(DatabaseError);
    expect(fixture.counts.Execute).toBe(2);
    expect(fixture.openTransactions()).toBe(0);
  });

  test('other errors are not mistaken for it', async () => {
    fixture.injectFault({
      error: 'DatabaseErrorException',
      message: 'ERROR: boom; SQLState: XX000',
      times: 2,
    });
    await expect(driver(client).query('SELECT 1')).rejects.toBeInstanceOf(DatabaseError);
    expect(fixture.counts.Execute).toBe(1);
  });
});

describe('a session in another time zone', () => {
  test('the fixture really runs the session there, and still returns timestamptz in UTC', async () => {
    const out = await farEastClient.send(
      new ExecuteStatementCommand({
        ...ARNS,
        database: t.name,
        sql: "SELECT current_setting('TimeZone') AS zone, TIMESTAMPTZ '2026-11-28 22:05:01.5Z' AS at, TIMESTAMPTZ '2026-11-28 22:05:01.5Z'::text AS local",
      }),
    );
    expect(out.records![0]!.map((f) => f.stringValue)).toEqual([
      'Pacific/Kiritimati',
      '2026-11-28 22:05:01.5',
      '2026-11-29 12:05:01.5+14',
    ]);
  });

  test('a bare TIMESTAMP-hinted value would be read as local time there; the driver sends an instant', async () => {
    const at = new Date('2026-11-28T22:05:01.123Z');
    // What a statement without the driver's conversion gets: the wall-clock time read at UTC+14.
    const naive = await farEastClient.send(
      new ExecuteStatementCommand({
        ...ARNS,
        database: t.name,
        sql: 'SELECT CAST(:at AS timestamptz) AS at',
        parameters: [
          { name: 'at', value: { stringValue: '2026-11-28 22:05:01.123' }, typeHint: 'TIMESTAMP' },
        ],
      }),
    );
    expect(naive.records![0]![0]!.stringValue).toBe('2026-11-28 08:05:01.123');
    const res = await driver(farEastClient).query<{ at: Date; same: boolean }>(
      'SELECT CAST(:at AS timestamptz) AS at, :at = TIMESTAMPTZ :literal AS same',
      { at, literal: '2026-11-28 22:05:01.123Z' },
    );
    expect(res.rows).toEqual([{ at, same: true }]);
  });

  test('jobs scheduled ahead stay ahead, and times read back are the instants written', async () => {
    const tracker = new JobTracker({ db: driver(farEastClient), registry: createTestRegistry() });
    const runAt = new Date(Date.now() + 3_600_000);
    const due = await tracker.enqueue({ type: 'noop', payload: { n: 1 } });
    const later = await tracker.enqueue({ type: 'noop', payload: { n: 2 }, runAt });
    expect(later.job.scheduledAt).toEqual(runAt);
    expect((await tracker.getJob(later.job.id))?.scheduledAt).toEqual(runAt);
    // Read at UTC+14 as local time, the later job would have been due 13 hours ago.
    const claimed = await tracker.fetchReady(10);
    expect(claimed.map((j) => j.id)).toEqual([due.job.id]);
  });
});

describe("the fixture's own placeholder scanner", () => {
  test('reads PostgreSQL the way the server does', () => {
    expect(
      scanPlaceholders(
        "SELECT :a, ':b', E'\\':c', \"d:e\", $$ :f $$, /* /* :g */ :h */ x::int, :a -- :i\n, :j",
      ),
    ).toEqual({
      positional: "SELECT $1, ':b', E'\\':c', \"d:e\", $$ :f $$, /* /* :g */ :h */ x::int, $1 -- :i\n, $2",
      names: ['a', 'j'],
    });
  });

  test("agrees with the driver's parser on what PostgreSQL makes tricky", async () => {
    // Each would have been read differently by a parser that ends an E'' string at \' or a block
    // comment at the first */; the fixture's own scanner is what the service stands in for.
    const tricky = [
      "SELECT E'\\'' AS quote, :x AS x",
      "SELECT E'it\\'s :nope' AS text, :x AS x",
      'SELECT /* outer /* inner */ :nope */ :x AS x',
      "SELECT 'a''b :nope' AS text, :x::int AS x",
      'SELECT $body$ :nope $body$ AS text, :x AS x',
    ];
    for (const sql of tricky) {
      expect(scanPlaceholders(sql).names, sql).toEqual(['x']);
      expect(parseNamedParams(sql).names, sql).toEqual(['x']);
      const res = await driver(client).query<{ x: unknown }>(sql, { x: 7 });
      expect(Number(res.rows[0]!.x), sql).toBe(7);
    }
  });

  test('a placeholder the driver does not send fails the call, as on the service', async () => {
    const out = await client
      .send(new ExecuteStatementCommand({ ...ARNS, database: t.name, sql: 'SELECT :x AS x' }))
      .then(
        () => undefined,
        (e: unknown) => e as Error,
      );
    expect(out?.name).toBe('DatabaseErrorException');
    expect(out?.message).toMatch(/No value specified for parameter :x/);
  });
});
