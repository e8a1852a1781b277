import { RDSDataClient } from '@aws-sdk/client-rds-data';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import { JobTracker, MAX_PAYLOAD_BYTES } from '../../shared/jobs/tracker.js';
import { type DataApiFixture, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { createTestRegistry } from '../support/test-job-types.js';

/**
 * Each statement that answers with a document or whole job rows, at the size its chunking allows,
 * through the fixture's 64 KB-per-row and 1 MiB-per-response limits: the chunk sizes in the tracker are
 * only right if these pass.
 */
let t: TestDatabase;
let fixture: DataApiFixture;
let client: RDSDataClient;
let db: DataApiDatabase;
/** The longest job type name the registry accepts (63 characters): the widest completion entry. */
const LONG_TYPE = `l${'o'.repeat(61)}g`;
const registry = () =>
  createTestRegistry().register({
    type: LONG_TYPE,
    description: 'a type with the longest name',
    schema: createTestRegistry().get('noop')!.schema,
    execute: async () => undefined,
  });

beforeAll(async () => {
  t = await createTestDatabase();
  fixture = await startDataApiFixture(t.url);
  client = new RDSDataClient({
    endpoint: fixture.endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
    maxAttempts: 1,
  });
  db = new DataApiDatabase({
    resourceArn: 'arn:aws:rds:us-east-1:123456789012:cluster:lana-jobs',
    secretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:lana-jobs',
    database: t.name,
    client,
  });
});
afterAll(async () => {
  client?.destroy();
  await fixture?.close();
  await t?.drop();
});
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_execution_records');
});

/** A payload of exactly MAX_PAYLOAD_BYTES of JSON, of characters that take 3 bytes in UTF-8. */
function largestPayload(n: number): { reason: string } {
  const frame = Buffer.byteLength(JSON.stringify({ reason: `${n}:` }));
  const room = MAX_PAYLOAD_BYTES - frame;
  const reason = `${n}:${'€'.repeat(Math.floor(room / 3))}${'x'.repeat(room % 3)}`;
  expect(Buffer.byteLength(JSON.stringify({ reason }))).toBe(MAX_PAYLOAD_BYTES);
  return { reason };
}

describe('statements answering with rows or documents, at their limits', () => {
  test('claim: a full batch of 30 jobs with the largest payloads', async () => {
    const tracker = new JobTracker({ db, registry: createTestRegistry() });
    await tracker.enqueueMany(
      Array.from({ length: 30 }, (_, n) => ({ type: 'always-fails' as const, payload: largestPayload(n) })),
    );
    const claimed = await tracker.fetchReady(30);
    expect(claimed).toHaveLength(30);
    expect(claimed.map((j) => (j.payload as { reason: string }).reason.length).sort()).toEqual(
      Array.from({ length: 30 }, (_, n) => largestPayload(n).reason.length).sort(),
    );
  });

  test('lookup by idempotency key: existing jobs with the largest payloads come back', async () => {
    const tracker = new JobTracker({ db, registry: createTestRegistry() });
    const jobs = Array.from({ length: 45 }, (_, n) => ({
      type: 'always-fails' as const,
      payload: largestPayload(n),
      idempotencyKey: `key-${n}-${'k'.repeat(200)}`,
    }));
    const first = await tracker.enqueueMany(jobs);
    const again = await tracker.enqueueMany(jobs);
    expect(again.map((r) => [r.created, r.job.id])).toEqual(first.map((r) => [false, r.job.id]));
  });

  test('enqueue: the ids of 2,500 keyed jobs, 1,000 to a row', async () => {
    const tracker = new JobTracker({ db, registry: createTestRegistry() });
    const results = await tracker.enqueueMany(
      Array.from({ length: 2_500 }, (_, n) => ({
        type: 'noop' as const,
        payload: { n },
        idempotencyKey: `k-${n}`,
      })),
    );
    expect(results.filter((r) => r.created)).toHaveLength(2_500);
  });

  test('completion: 700 attempts of the longest type name, 300 to a statement', async () => {
    const tracker = new JobTracker({ db, registry: registry() });
    await tracker.enqueueUntyped(
      Array.from({ length: 700 }, (_, n) => ({ type: LONG_TYPE, payload: { n } })),
    );
    const claimed = [
      ...(await tracker.fetchReady(500, { startNow: true })),
      ...(await tracker.fetchReady(500, { startNow: true })),
    ];
    expect(claimed).toHaveLength(700);
    fixture.resetCounts();
    const applied = await tracker.completeMany(
      claimed.map((j) => ({ id: j.id, attempt: j.attempts, durationMs: 123_456_789.5 })),
    );
    expect(applied).toHaveLength(700);
    expect(fixture.counts.Execute).toBeGreaterThanOrEqual(3);
  });
});
