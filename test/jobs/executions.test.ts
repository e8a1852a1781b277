import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import type { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import { type Database, DatabaseError } from '../../shared/db/port.js';
import { type DataApiFixture, dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { coreKit, type ExecutionRecord, executionRows } from '../support/lifecycle.js';
import { previousCompleteAttemptsSql, previousPruneFinishedJobsSql } from '../support/previous-release.js';

let t: TestDatabase;
let fixture: DataApiFixture;
let dataApi: DataApiDatabase;
let kit: ReturnType<typeof coreKit>;

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
  // The completed attempt's record is the job row: the table holds the other three.
  expect(await recordedAttempts(job.id)).toEqual([1, 2, 3]);
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
  // The records' primary key (job_id, attempt) is the backstop, through the view as well (the previous
  // release's inserts). A completion's record is its job row: one per job.
  const { job: failed } = await tracker.enqueue({ type: 'noop', payload: {} });
  await tracker.fetchReady(1, { startNow: true });
  expect(await tracker.markFailed(failed.id, 1, 'x')).not.toBeNull();
  const duplicate = await t.db
    .query(
      `INSERT INTO job_executions (job_id, attempt, claimed_at, finished_at, outcome)
       VALUES (CAST(:id AS uuid), 1, now(), now(), 'failed')`,
      { id: failed.id },
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

/** The attempts of `jobId` that have a row of their own in `job_execution_records`. */
async function recordedAttempts(jobId: string): Promise<number[]> {
  const res = await t.db.query<{ attempt: number }>(
    'SELECT attempt FROM job_execution_records WHERE job_id = CAST(:id AS uuid) ORDER BY attempt',
    { id: jobId },
  );
  return res.rows.map((r) => r.attempt);
}

/** A record without its job's id, to compare the records of two jobs. */
const withoutId = ({ job_id: _, ...rest }: ExecutionRecord) => rest;

describe.each([
  ['node-postgres', () => t.db],
  ['Data API', () => dataApi],
])("a completed attempt's record is its job row (%s)", (_name, db: () => Database) => {
  /** A job claimed at 00:00:00 and begun at 00:00:01 (the test clock), to be completed 2.5 s later. */
  async function begunJob(k: ReturnType<typeof coreKit>): Promise<string> {
    k.clock.set('2026-03-01T00:00:00Z');
    const { job } = await k.tracker.enqueue({ type: 'noop', payload: {} });
    expect(await k.tracker.fetchReady(1)).toHaveLength(1);
    k.clock.advance(1000);
    expect(await k.tracker.startAttempt(job.id, 1)).not.toBeNull();
    k.clock.advance(2500);
    return job.id;
  }

  /** Completes the attempt as the release before migration 0026 did: a record row, no duration on the job. */
  async function completeThePreviousWay(k: ReturnType<typeof coreKit>, id: string, durationMs?: number) {
    const res = await db().query<{ applied: string }>(previousCompleteAttemptsSql, {
      items: JSON.stringify([{ id, attempt: 1, duration_ms: durationMs ?? null }]),
      now: k.clock.now(),
      token: randomUUID(),
    });
    expect(JSON.parse(res.rows[0]!.applied)).toHaveLength(1);
  }

  const completions: [
    string,
    (k: ReturnType<typeof coreKit>, id: string, ms?: number) => Promise<boolean>,
  ][] = [
    ['completeAttemptsSql', (k, id, ms) => k.tracker.markCompleted(id, 1, { durationMs: ms })],
    [
      'completeAndClaimNextSql',
      async (k, id, ms) =>
        (await k.tracker.completeAndClaimNext({ id, attempt: 1, durationMs: ms }, 'noop')).completed,
    ],
    [
      'completeAndClaimBehindSql',
      async (k, id, ms) =>
        (await k.tracker.completeAndClaimBehind({ id, attempt: 1, durationMs: ms }, null, 'noop', false))
          .completed,
    ],
  ];

  test.each(
    completions,
  )('%s: the record reads as the previous release wrote it, and no record row is written', async (_statement, complete) => {
    const k = coreKit(db());
    for (const durationMs of [2400, undefined]) {
      const ours = await begunJob(k);
      expect(await complete(k, ours, durationMs)).toBe(true);
      const theirs = await begunJob(k);
      await completeThePreviousWay(k, theirs, durationMs);

      const [record] = await executionRows(t.db, ours);
      expect(record).toEqual({
        job_id: ours,
        attempt: 1,
        claimed_at: new Date('2026-03-01T00:00:00Z'),
        started_at: new Date('2026-03-01T00:00:01Z'),
        finished_at: new Date('2026-03-01T00:00:03.500Z'),
        outcome: 'completed',
        error: null,
        // Without the executor's measure: the time since the attempt began.
        duration_ms: durationMs ?? 2500,
      });
      expect((await executionRows(t.db, theirs)).map(withoutId)).toEqual([withoutId(record!)]);
      expect(await recordedAttempts(ours)).toEqual([]);
      // The previous release's completion: its record row, and a job row the view does not read.
      expect(await recordedAttempts(theirs)).toEqual([1]);
      const durations = await t.db.query<{ id: string; duration_ms: number | null }>(
        'SELECT id::text, duration_ms FROM jobs WHERE id IN (CAST(:ours AS uuid), CAST(:theirs AS uuid))',
        { ours, theirs },
      );
      expect(Object.fromEntries(durations.rows.map((r) => [r.id, r.duration_ms]))).toEqual({
        [ours]: durationMs ?? 2500,
        [theirs]: null,
      });
    }
  });

  test('a failed then completed job: the failure is a record row, the completion its job row; both read', async () => {
    const k = coreKit(db());
    const id = await begunJob(k);
    await k.tracker.markFailed(id, 1, 'first', { durationMs: 100 });
    k.clock.set('2026-03-01T00:10:00Z');
    expect(await k.tracker.fetchReady(1, { startNow: true })).toHaveLength(1);
    k.clock.advance(750);
    expect(await k.tracker.markCompleted(id, 2)).toBe(true);
    expect((await executionRows(t.db, id)).map((r) => [r.attempt, r.outcome, r.duration_ms])).toEqual([
      [1, 'failed', 100],
      [2, 'completed', 750],
    ]);
    expect(await recordedAttempts(id)).toEqual([1]);
    // The job's page reads the same history.
    expect((await k.tracker.getExecutions(id)).map((e) => e.outcome)).toEqual(['failed', 'completed']);
  });

  test("the previous release's record, inserted through the view, lands in the table", async () => {
    const k = coreKit(db());
    const id = await begunJob(k);
    await db().query(
      `INSERT INTO job_executions (job_id, attempt, claimed_at, started_at, finished_at, outcome, error,
                                   duration_ms)
       VALUES (CAST(:id AS uuid), 1, :claimed, :started, :finished, 'failed', 'boom', 12)`,
      {
        id,
        claimed: new Date('2026-03-01T00:00:00Z'),
        started: new Date('2026-03-01T00:00:01Z'),
        finished: k.clock.now(),
      },
    );
    expect(await recordedAttempts(id)).toEqual([1]);
    expect(await executionRows(t.db, id)).toEqual([
      {
        job_id: id,
        attempt: 1,
        claimed_at: new Date('2026-03-01T00:00:00Z'),
        started_at: new Date('2026-03-01T00:00:01Z'),
        finished_at: k.clock.now(),
        outcome: 'failed',
        error: 'boom',
        duration_ms: 12,
      },
    ]);
  });

  test('a completed job taken out of `completed` keeps its record: the trigger writes it into the table', async () => {
    const k = coreKit(db());
    const id = await begunJob(k);
    expect(await k.tracker.markCompleted(id, 1, { durationMs: 42 })).toBe(true);
    const before = await executionRows(t.db, id);
    expect(await recordedAttempts(id)).toEqual([]);
    // No statement of ours does this; the trigger is there for one that would.
    await db().query(
      "UPDATE jobs SET status = 'pending', completed_at = NULL, scheduled_at = :now WHERE id = CAST(:id AS uuid)",
      { id, now: k.clock.now() },
    );
    expect(await recordedAttempts(id)).toEqual([1]);
    expect(await executionRows(t.db, id)).toEqual(before);
    // Run again, its next completion is the job row's record once more.
    k.clock.advance(60_000);
    expect(await k.tracker.fetchReady(1, { startNow: true })).toHaveLength(1);
    k.clock.advance(300);
    expect(await k.tracker.markCompleted(id, 2)).toBe(true);
    expect((await executionRows(t.db, id)).map((r) => [r.attempt, r.outcome, r.duration_ms])).toEqual([
      [1, 'completed', 42],
      [2, 'completed', 300],
    ]);
    expect(await recordedAttempts(id)).toEqual([1]);
  });

  test.each([
    ['this release', 'pruneFinished'],
    ['the previous release, through the view', 'previous'],
  ])('the retention prune of %s removes every record of the jobs it deletes', async (_release, how) => {
    const k = coreKit(db());
    const completed = await begunJob(k);
    await k.tracker.markCompleted(completed, 1);
    const completedBefore = await begunJob(k);
    await completeThePreviousWay(k, completedBefore);
    const failedThenCompleted = await begunJob(k);
    await k.tracker.markFailed(failedThenCompleted, 1, 'first');
    k.clock.set('2026-03-01T00:10:00Z');
    await k.tracker.fetchReady(1, { startNow: true });
    await k.tracker.markCompleted(failedThenCompleted, 2);
    const cancelled = await begunJob(k);
    await k.tracker.cancel(cancelled);
    const ids = [completed, completedBefore, failedThenCompleted, cancelled];
    expect((await executionRows(t.db)).length).toBe(5);

    const before = new Date('2026-03-02T00:00:00Z');
    const statuses = ['completed', 'cancelled'] as ('completed' | 'cancelled')[];
    if (how === 'pruneFinished') expect(await k.tracker.pruneFinished({ before, statuses })).toBe(4);
    else {
      const res = await db().query(previousPruneFinishedJobsSql, {
        statuses: JSON.stringify(statuses),
        before,
        job_type: null,
        batch: 100,
      });
      expect(res.rows.map((r) => r.id).sort()).toEqual([...ids].sort());
    }
    expect(await executionRows(t.db)).toEqual([]);
    const left = await t.db.query<{ n: number }>(
      'SELECT (SELECT count(*) FROM jobs)::int + (SELECT count(*) FROM job_execution_records)::int AS n',
    );
    expect(left.rows[0]!.n).toBe(0);
  });
});
