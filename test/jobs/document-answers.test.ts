import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import type { Database } from '../../shared/db/port.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { asDatabase, coreKit, countingQueryable } from '../support/lifecycle.js';

/**
 * Hot statements answer with one JSON document when the driver has no per-row size limit (node-postgres),
 * and with a row per job when it has one (the Data API's 64 KB). Both forms must decode to the same jobs.
 */
let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_execution_records');
});

/** The same database, seen through a driver that declares the Data API's row limit. */
function withRowLimit(db: Database): Database {
  return {
    driverName: 'data-api',
    maxRowBytes: 64_000,
    query: (sql, params) => db.query(sql, params),
    transaction: (work) => db.transaction(work),
    close: async () => {},
  };
}

describe('document and row answers', () => {
  test('enqueue returns the jobs as stored, to the millisecond, with or without a row limit', async () => {
    const documentKit = coreKit(t.db);
    const rowsTracker = new JobTracker({
      db: withRowLimit(t.db),
      registry: documentKit.registry,
      clock: documentKit.clock,
    });
    const spec = [
      { type: 'noop' as const, payload: { n: 1 } },
      { type: 'noop' as const, payload: { n: 2 }, idempotencyKey: 'k-1', priority: -5, maxAttempts: 2 },
      { type: 'noop' as const, payload: { n: 3 }, runAt: new Date('2026-03-01T00:00:01.2345Z') },
    ];
    const viaDocument = await documentKit.tracker.enqueueMany(spec);
    const viaRows = await rowsTracker.enqueueMany(
      spec.map((s) => ({ ...s, idempotencyKey: s.idempotencyKey && 'k-2' })),
    );
    for (const { job } of [...viaDocument, ...viaRows]) {
      expect(job).toEqual(await documentKit.tracker.getJob(job.id));
    }
    expect(viaDocument.map((r) => r.job.payload)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    expect(viaDocument[1]!.job).toMatchObject({ idempotencyKey: 'k-1', priority: -5, maxAttempts: 2 });
    expect(viaDocument[2]!.job.scheduledAt.toISOString()).toBe('2026-03-01T00:00:01.234Z');
  });

  test('a claim decodes to the same jobs in either form, in claim order', async () => {
    const { tracker, registry, clock } = coreKit(t.db);
    await tracker.enqueueMany(
      Array.from({ length: 6 }, (_, n) => ({
        type: 'noop' as const,
        payload: { n },
        priority: n % 2 === 0 ? 1 : 0,
        // Distinct due times: jobs due in the same millisecond have no order among themselves.
        runAt: new Date(Date.parse('2026-03-01T00:00:00Z') + (n + 1) * 1000),
        ...(n === 4 ? { idempotencyKey: 'claim-key' } : {}),
      })),
    );
    clock.advance(10_000);
    const counting = countingQueryable(t.db);
    const documentTracker = new JobTracker({ db: asDatabase(counting), registry, clock });
    const rowsTracker = new JobTracker({ db: withRowLimit(t.db), registry, clock });
    const first = await documentTracker.fetchReady(3, { startNow: true });
    const second = await rowsTracker.fetchReady(3, { startNow: true });
    expect(counting.statements[0]).toMatch(/json_agg/);
    // Priority 0 first (odd n), then priority 1; the document claim took the best three.
    expect(first.map((j) => j.payload)).toEqual([{ n: 1 }, { n: 3 }, { n: 5 }]);
    expect(second.map((j) => j.payload)).toEqual([{ n: 0 }, { n: 2 }, { n: 4 }]);
    for (const claimed of [...first, ...second]) {
      const job = (await tracker.getJob(claimed.id))!;
      expect(claimed).toEqual({
        id: job.id,
        jobType: job.jobType,
        payload: job.payload,
        attempts: job.attempts,
        maxAttempts: job.maxAttempts,
        priority: job.priority,
        idempotencyKey: job.idempotencyKey,
        scheduledAt: job.scheduledAt,
        leaseExpiresAt: job.leaseExpiresAt,
      });
      expect(job.status).toBe('running');
    }
  });

  test('completions answer in one document and report fenced-out attempts by leaving them out', async () => {
    const { tracker } = coreKit(t.db);
    await tracker.enqueueMany([1, 2, 3].map((n) => ({ type: 'noop' as const, payload: { n } })));
    const claimed = await tracker.fetchReady(3, { startNow: true });
    const applied = await tracker.completeMany([
      { id: claimed[0]!.id, attempt: claimed[0]!.attempts, durationMs: 3 },
      { id: claimed[1]!.id, attempt: claimed[1]!.attempts + 1, durationMs: 3 }, // not the current attempt
      { id: claimed[2]!.id, attempt: claimed[2]!.attempts },
    ]);
    expect(applied.sort()).toEqual([claimed[0]!.id, claimed[2]!.id].sort());
    expect((await tracker.getJob(claimed[1]!.id))!.status).toBe('running');
  });

  test('under a row limit, a large completion is split so no answer row can outgrow it', async () => {
    const { tracker, registry, clock } = coreKit(t.db);
    await tracker.enqueueMany(
      Array.from({ length: 305 }, (_, n) => ({ type: 'noop' as const, payload: { n } })),
    );
    const counting = countingQueryable(t.db);
    const rowsTracker = new JobTracker({
      db: { ...withRowLimit(t.db), query: counting.query },
      registry,
      clock,
    });
    const claimed = await rowsTracker.fetchReady(400, { startNow: true });
    expect(claimed).toHaveLength(305);
    const applied = await rowsTracker.completeMany(claimed.map((c) => ({ id: c.id, attempt: c.attempts })));
    expect(applied).toHaveLength(305);
    expect(counting.statements.filter((s) => s.includes('done AS'))).toHaveLength(2);
    expect(counting.statements[0]).not.toMatch(/json_agg/);
    const counts = await t.db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM job_executions WHERE outcome = 'completed'`,
    );
    expect(counts.rows[0]!.n).toBe(305);
  });
});
