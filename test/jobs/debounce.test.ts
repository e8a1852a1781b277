import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { z } from 'zod';
import type { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import type { Database } from '../../shared/db/port.js';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobInputError } from '../../shared/jobs/errors.js';
import { newJobId } from '../../shared/jobs/ids.js';
import { JobTypeRegistry } from '../../shared/jobs/registry.js';
import { upsertDebouncedJobSql } from '../../shared/jobs/sql.js';
import { JobTracker, type UntypedNewJob } from '../../shared/jobs/tracker.js';
import { type DataApiFixture, dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * Debounce: enqueues with one key while the job has not started make one job, with the last payload, due
 * a window after the last enqueue (never past the maximum wait); a claimed job lets the next burst begin.
 */
const registry = () =>
  new JobTypeRegistry()
    .register({
      type: 'revalue',
      description: 'd',
      schema: z.strictObject({ facilityId: z.string(), version: z.number().int() }),
      execute: async () => undefined,
    })
    .register({
      type: 'other',
      description: 'd',
      schema: z.object({}),
      execute: async () => undefined,
    });
type Tracker = JobTracker<ReturnType<typeof registry>['schemas']>;

let t: TestDatabase;
let fixture: DataApiFixture;
let dataApi: DataApiDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
  fixture = await startDataApiFixture(t.url);
  dataApi = dataApiDriverOver(fixture, t.name);
});
afterAll(async () => {
  await dataApi?.close();
  await fixture?.close();
  await t?.drop();
});
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_execution_records');
});

async function rows() {
  return (
    await t.db.query<{ id: string; status: string; payload: string; scheduled_at: Date; job_type: string }>(
      'SELECT id, status, payload::text AS payload, scheduled_at, job_type FROM jobs ORDER BY id',
    )
  ).rows.map((r) => ({ ...r, payload: JSON.parse(r.payload) as unknown }));
}

const at = (iso: string) => new Date(iso).toISOString();

describe.each([
  ['node-postgres', () => t.db as Database],
  ['Data API', () => dataApi as Database],
])('debounce (%s)', (_name, db) => {
  const tracker = (clock = new ManualClock('2026-06-01T00:00:00Z')) =>
    new JobTracker({ db: db(), registry: registry(), clock }) as Tracker;
  const debounce = { key: 'facility:1', windowSeconds: 30 };
  const payload = (version: number) => ({ facilityId: '1', version });

  test('a burst makes one job with the last payload, due a window after the last enqueue', async () => {
    const clock = new ManualClock('2026-06-01T00:00:00Z');
    const jobs = tracker(clock);
    const first = await jobs.enqueue({ type: 'revalue', payload: payload(1), debounce });
    expect(first.created).toBe(true);
    expect(first.job.scheduledAt.toISOString()).toBe(at('2026-06-01T00:00:30Z'));
    clock.advance(10_000);
    const second = await jobs.enqueue({ type: 'revalue', payload: payload(2), debounce });
    clock.advance(10_000);
    const third = await jobs.enqueue({ type: 'revalue', payload: payload(3), debounce });
    expect([second.created, third.created]).toEqual([false, false]);
    expect(third.job).toMatchObject({ id: first.job.id, status: 'pending', payload: payload(3) });
    expect(third.job.scheduledAt.toISOString()).toBe(at('2026-06-01T00:00:50Z'));
    expect(await rows()).toMatchObject([{ id: first.job.id, payload: payload(3) }]);

    // Not due inside the window; at its end the one job runs with the last payload.
    clock.set('2026-06-01T00:00:49Z');
    expect(await jobs.fetchReady(10)).toEqual([]);
    clock.set('2026-06-01T00:00:50Z');
    const claimed = await jobs.fetchReady(10);
    expect(claimed.map((j) => [j.id, j.payload])).toEqual([[first.job.id, payload(3)]]);

    // Started: the next enqueue begins a new burst, and the running job keeps its payload.
    const next = await jobs.enqueue({ type: 'revalue', payload: payload(4), debounce });
    expect(next.created).toBe(true);
    expect(next.job.id).not.toBe(first.job.id);
    expect(await rows()).toMatchObject([
      { id: first.job.id, status: 'running', payload: payload(3) },
      { id: next.job.id, status: 'pending', payload: payload(4) },
    ]);
  });

  test('a maximum wait bounds an endless burst: the job runs by the first enqueue plus the wait', async () => {
    const clock = new ManualClock('2026-06-01T00:00:00Z');
    const jobs = tracker(clock);
    const bounded = { ...debounce, maxWaitSeconds: 60 };
    const first = await jobs.enqueue({ type: 'revalue', payload: payload(1), debounce: bounded });
    let last = first;
    for (let i = 2; i <= 8; i++) {
      clock.advance(20_000);
      last = await jobs.enqueue({ type: 'revalue', payload: payload(i), debounce: bounded });
    }
    expect(last.job.id).toBe(first.job.id);
    // Without the bound it would be due at 00:02:50; the burst's deadline is 00:01:00.
    expect(last.job.scheduledAt.toISOString()).toBe(at('2026-06-01T00:01:00Z'));
    clock.set('2026-06-01T00:01:00Z');
    expect((await jobs.fetchReady(10)).map((j) => j.payload)).toEqual([payload(8)]);
  });

  test('keys are per type and per key: other keys and other types make their own jobs', async () => {
    const jobs = tracker();
    await jobs.enqueue({ type: 'revalue', payload: payload(1), debounce });
    await jobs.enqueue({
      type: 'revalue',
      payload: payload(1),
      debounce: { ...debounce, key: 'facility:2' },
    });
    await jobs.enqueue({ type: 'other', payload: {}, debounce });
    await jobs.enqueue({ type: 'revalue', payload: payload(2), debounce });
    const all = await rows();
    expect(all.map((r) => r.job_type).sort()).toEqual(['other', 'revalue', 'revalue']);
  });

  test('concurrent enqueues with one key leave exactly one pending job, holding one of their payloads', async () => {
    const jobs = tracker();
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) => jobs.enqueue({ type: 'revalue', payload: payload(i), debounce })),
    );
    const all = await rows();
    expect(all).toHaveLength(1);
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(new Set(results.map((r) => r.job.id))).toEqual(new Set([all[0]!.id]));
    expect(results.map((r) => r.job.payload)).toContainEqual(all[0]!.payload);
  });

  test("a retried job of an earlier burst does not meet the new burst's job", async () => {
    const clock = new ManualClock('2026-06-01T00:00:00Z');
    const jobs = tracker(clock);
    const old = await jobs.enqueue({ type: 'revalue', payload: payload(1), debounce });
    clock.advance(30_000);
    await jobs.fetchReady(1);
    await jobs.cancel(old.job.id);
    const fresh = await jobs.enqueue({ type: 'revalue', payload: payload(2), debounce });
    // Pending again beside the new burst's pending job: the first has been claimed, so it is not the burst's.
    await jobs.retry(old.job.id);
    const again = await jobs.enqueue({ type: 'revalue', payload: payload(3), debounce });
    expect(again.job.id).toBe(fresh.job.id);
    expect(await rows()).toMatchObject([
      { id: old.job.id, status: 'pending', payload: payload(1) },
      { id: fresh.job.id, status: 'pending', payload: payload(3) },
    ]);
  });

  test('the statement sent again after its insert committed and a claim took the job answers with that job', async () => {
    const clock = new ManualClock('2026-06-01T00:00:00Z');
    const jobs = tracker(clock);
    // As the Data API's client resends it: the same statement with the same parameters (the same id).
    const params = {
      now: clock.now(),
      id: newJobId(),
      job_type: 'revalue',
      payload: JSON.stringify(payload(1)),
      scheduled_at: null,
      max_attempts: 3,
      backoff_base_seconds: 60,
      backoff_cap_seconds: 600,
      lease_seconds: 60,
      priority: 0,
      idempotency_key: null,
      debounce_key: 'facility:1',
      concurrency_key: null,
      window_seconds: 1,
      max_wait_seconds: null,
    };
    const sent = await db().query<{ id: string; created: boolean }>(upsertDebouncedJobSql, params);
    expect(sent.rows).toMatchObject([{ id: params.id, created: true }]);
    clock.advance(1_000);
    expect((await jobs.fetchReady(1)).map((j) => j.id)).toEqual([params.id]);
    const resent = await db().query<{ id: string; status: string; created: boolean }>(upsertDebouncedJobSql, {
      ...params,
      now: clock.now(),
    });
    expect(resent.rows).toMatchObject([{ id: params.id, status: 'running', created: true }]);
    expect(await rows()).toHaveLength(1);
  });

  const bad: [string, UntypedNewJob, RegExp][] = [
    [
      'an empty key',
      { type: 'revalue', payload: payload(1), debounce: { key: '', windowSeconds: 5 } },
      /debounce key must be 1 to 255 characters/,
    ],
    [
      'a key that is not text',
      { type: 'revalue', payload: payload(1), debounce: { key: 7, windowSeconds: 5 } },
      /debounce key must be 1 to 255 characters \(got 7\)/,
    ],
    [
      'a NUL in the key',
      { type: 'revalue', payload: payload(1), debounce: { key: 'a\u0000', windowSeconds: 5 } },
      /debounce key contains a NUL character/,
    ],
    [
      'a zero window',
      { type: 'revalue', payload: payload(1), debounce: { key: 'k', windowSeconds: 0 } },
      /debounce window must be an integer from 1 to 86400 seconds \(got 0\)/,
    ],
    [
      'a fractional window',
      { type: 'revalue', payload: payload(1), debounce: { key: 'k', windowSeconds: 1.5 } },
      /debounce window must be an integer/,
    ],
    [
      'a window over a day',
      { type: 'revalue', payload: payload(1), debounce: { key: 'k', windowSeconds: '86401' } },
      /debounce window must be an integer from 1 to 86400/,
    ],
    [
      'a maximum wait under the window',
      { type: 'revalue', payload: payload(1), debounce: { key: 'k', windowSeconds: 60, maxWaitSeconds: 30 } },
      /debounce maximum wait must be an integer from 60 to 604800 seconds \(at least the window\)/,
    ],
    [
      'not an object',
      { type: 'revalue', payload: payload(1), debounce: 'k' as never },
      /debounce must be an object/,
    ],
    [
      'an idempotency key too',
      { type: 'revalue', payload: payload(1), idempotencyKey: 'x', debounce: { key: 'k', windowSeconds: 5 } },
      /takes no idempotency key/,
    ],
    [
      'a run time too',
      {
        type: 'revalue',
        payload: payload(1),
        runAt: new Date('2026-06-02T00:00:00Z'),
        debounce: { key: 'k', windowSeconds: 5 },
      },
      /takes no run time/,
    ],
    [
      'a payload failing its schema',
      { type: 'revalue', payload: { facilityId: 1 }, debounce: { key: 'k', windowSeconds: 5 } },
      /facilityId/,
    ],
  ];
  test.each(bad)('refused with one clear error, nothing written: %s', async (_what, job, message) => {
    const jobs = tracker();
    await jobs.enqueueUntyped([
      { type: 'revalue', payload: payload(0), debounce: { key: 'k', windowSeconds: 5 } },
    ]);
    const before = await rows();
    const err = await jobs.enqueueUntyped([job]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(JobInputError);
    expect((err as Error).message).toMatch(message);
    expect(await rows()).toEqual(before);
  });

  test('a debounced job in a batch is refused, nothing written', async () => {
    const jobs = tracker();
    const err = await jobs
      .enqueueUntyped([
        { type: 'other', payload: {} },
        { type: 'revalue', payload: payload(1), debounce },
      ])
      .catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/a debounced job is enqueued on its own/);
    expect(await rows()).toEqual([]);
  });

  test("inside the caller's transaction, it commits or rolls back with the caller's changes", async () => {
    const jobs = tracker();
    await db()
      .transaction(async (tx) => {
        await jobs.enqueue({ type: 'revalue', payload: payload(1), debounce }, { db: tx });
        throw new Error('rolled back');
      })
      .catch(() => undefined);
    expect(await rows()).toEqual([]);
    await db().transaction(async (tx) => {
      await jobs.enqueue({ type: 'revalue', payload: payload(2), debounce }, { db: tx });
    });
    expect(await rows()).toMatchObject([{ payload: payload(2) }]);
  });
});
