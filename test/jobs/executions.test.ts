import { afterAll, beforeAll, beforeEach, expect, test } from 'vitest';
import { DatabaseError } from '../../shared/db/port.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { coreKit, executionRows } from '../support/lifecycle.js';

let t: TestDatabase;
let kit: ReturnType<typeof coreKit>;

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_executions');
  kit = coreKit(t.db);
});

const at = (iso: string) => new Date(iso);

test('one job_executions row per attempt, each closed with its outcome, times and duration', async () => {
  const { tracker, clock } = kit;
  const { job } = await tracker.enqueue({ type: 'noop', payload: {} });

  // Attempt 1: claimed, begun 1 s later, fails after 2.5 s (duration reported by the executor).
  await tracker.fetchReady(1); // 00:00:00
  clock.advance(1000);
  expect(await tracker.startAttempt(job.id, 1)).not.toBeNull(); // 00:00:01
  clock.advance(2500);
  await tracker.markFailed(job.id, 1, 'first', { durationMs: 2400.4 }); // 00:00:03.5, retry at 00:02:03.5
  // Attempt 2: claimed and started at once, then its executor vanishes; the rescuer closes it.
  clock.set('2026-03-01T00:02:03.500Z');
  await tracker.fetchReady(1, { startNow: true });
  clock.set('2026-03-01T00:10:00Z');
  await tracker.rescueExpiredLeases(); // retry at 00:14:00
  // Attempt 3: released unstarted.
  clock.set('2026-03-01T00:14:00Z');
  await tracker.fetchReady(1);
  clock.advance(200);
  await tracker.release([{ id: job.id, attempt: 3 }]);
  // Attempt 4: completes; the duration falls back to the time since the start.
  await tracker.fetchReady(1, { startNow: true }); // 00:14:00.2
  clock.advance(1234);
  expect(await tracker.markCompleted(job.id, 4)).toBe(true);

  expect(await executionRows(t.db, job.id)).toEqual([
    {
      job_id: job.id,
      attempt: 1,
      claimed_at: at('2026-03-01T00:00:00Z'),
      started_at: at('2026-03-01T00:00:01Z'),
      finished_at: at('2026-03-01T00:00:03.500Z'),
      outcome: 'failed',
      error: 'first',
      duration_ms: 2400,
    },
    {
      job_id: job.id,
      attempt: 2,
      claimed_at: at('2026-03-01T00:02:03.500Z'),
      started_at: at('2026-03-01T00:02:03.500Z'),
      finished_at: at('2026-03-01T00:10:00Z'),
      outcome: 'lease_expired',
      error: 'lease expired: the executor did not report within 420 s',
      duration_ms: 476_500,
    },
    {
      job_id: job.id,
      attempt: 3,
      claimed_at: at('2026-03-01T00:14:00Z'),
      started_at: null,
      finished_at: at('2026-03-01T00:14:00.200Z'),
      outcome: 'released',
      error: 'released unstarted',
      duration_ms: 200,
    },
    {
      job_id: job.id,
      attempt: 4,
      claimed_at: at('2026-03-01T00:14:00.200Z'),
      started_at: at('2026-03-01T00:14:00.200Z'),
      finished_at: at('2026-03-01T00:14:01.434Z'),
      outcome: 'completed',
      error: null,
      duration_ms: 1234,
    },
  ]);
  expect(await tracker.getJob(job.id)).toMatchObject({ status: 'completed', attempts: 4 });
});

test('exactly one row per attempt: repeated and fenced reports add nothing, and the key forbids a second', async () => {
  const { tracker } = kit;
  const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
  await tracker.fetchReady(1, { startNow: true });
  const [a, b, c, d] = await Promise.all([
    tracker.markCompleted(job.id, 1),
    tracker.markCompleted(job.id, 1),
    tracker.markFailed(job.id, 1, 'x'),
    tracker.completeMany([{ id: job.id, attempt: 1 }]),
  ]);
  const applied = [a, b, c !== null, d.length > 0].filter(Boolean);
  expect(applied).toHaveLength(1);
  expect(await executionRows(t.db, job.id)).toHaveLength(1);
  // The primary key (job_id, attempt) is the backstop.
  const duplicate = await t.db
    .query(
      `INSERT INTO job_executions (job_id, attempt, claimed_at, finished_at, outcome)
       VALUES (CAST(:id AS uuid), 1, now(), now(), 'completed')`,
      { id: job.id },
    )
    .catch((e: unknown) => e);
  expect(duplicate).toBeInstanceOf(DatabaseError);
  expect((duplicate as DatabaseError).isUniqueViolation).toBe(true);
});

test('batch completions and failures each close their own attempts', async () => {
  const { tracker } = kit;
  const results = await tracker.enqueueMany(
    Array.from({ length: 50 }, (_, n) => ({ type: 'noop' as const, payload: { n } })),
  );
  const claimed = await tracker.fetchReady(50, { startNow: true });
  const [even, odd] = [claimed.filter((_, i) => i % 2 === 0), claimed.filter((_, i) => i % 2 === 1)];
  expect(
    await tracker.completeMany(even.map((j) => ({ id: j.id, attempt: j.attempts, durationMs: 7 }))),
  ).toHaveLength(25);
  expect(
    await tracker.failMany(odd.map((j) => ({ id: j.id, attempt: j.attempts, error: 'odd' }))),
  ).toHaveLength(25);
  const rows = await executionRows(t.db);
  expect(rows).toHaveLength(50);
  expect(new Set(rows.map((r) => r.job_id))).toEqual(new Set(results.map((r) => r.job.id)));
  expect(rows.filter((r) => r.outcome === 'completed').every((r) => r.duration_ms === 7)).toBe(true);
  expect(rows.filter((r) => r.outcome === 'failed').every((r) => r.error === 'odd')).toBe(true);
});
