import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import type { ExecutorOutcome } from '../../functions/executor/handler.js';
import { ManualClock } from '../../shared/jobs/clock.js';
import type { JobResult } from '../../shared/jobs/dispatcher.js';
import { type AttemptOutcome, InMemoryMetrics } from '../../shared/jobs/metrics.js';
import {
  ATTEMPT_OUTCOMES,
  EXECUTION_OUTCOMES,
  type ExecutionOutcome,
  type RecordedStatus,
  type ReportedJobStatus,
} from '../../shared/jobs/outcomes.js';
import type { RecordedAttempt } from '../../shared/jobs/record-result.js';
import { type FailResult, JobTracker } from '../../shared/jobs/tracker.js';
import type { AttemptEvent } from '../../shared/runtime/worker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { type CoreTracker, createCoreRegistry, executionRows } from '../support/lifecycle.js';

/**
 * `ATTEMPT_OUTCOMES` is the one table of how an attempt ends. These tests hold it to the documentation's
 * table, to the other unions that describe an attempt's end, and to what the tracker really does.
 */

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
/** Compiles only when `A` and `B` are the same union (checked by `npm run check`). */
function sameUnion<A, B>(_proof: Equal<A, B>): void {}

describe('the other views derive from it', () => {
  test('the unions describing what a report left behind are the derived ones', () => {
    // Each line fails to compile when its union drifts from the table's derived type.
    sameUnion<RecordedAttempt['recorded'], RecordedStatus>(true);
    sameUnion<AttemptEvent['status'], RecordedStatus>(true);
    sameUnion<ExecutorOutcome, RecordedStatus | 'duplicate'>(true);
    sameUnion<FailResult['status'], Exclude<ReportedJobStatus, 'completed'>>(true);
    sameUnion<AttemptOutcome, 'completed' | 'retrying' | 'failed' | 'lease_expired'>(true);
    sameUnion<JobResult['outcome'], 'completed' | 'failed' | 'retry_later'>(true);
    sameUnion<keyof typeof ATTEMPT_OUTCOMES, ExecutionOutcome>(true);
    expect(Object.keys(ATTEMPT_OUTCOMES).sort()).toEqual([...EXECUTION_OUTCOMES].sort());
  });

  test("docs/flow-control.md's table lists every outcome once, counted as the code counts it", async () => {
    const doc = await readFile(new URL('../../docs/flow-control.md', import.meta.url), 'utf8');
    const section = doc.split('## What counts as an attempt')[1]?.split('\n## ')[0] ?? '';
    const rows = section
      .split('\n')
      .filter((l) => l.startsWith('| ') && !l.startsWith('| what happened'))
      .map((l) => l.split('|').map((c) => c.trim()));
    // | what happened | counted | history (`job_executions.outcome`) | the job |
    const documented = rows.map((c) => [c[3]!.replace(/`/g, ''), c[2] === 'yes'] as const);
    const coded = Object.entries(ATTEMPT_OUTCOMES).map(([o, row]) => [o, row.counted] as const);
    expect(documented.map(([o]) => o).sort()).toEqual([...EXECUTION_OUTCOMES].sort());
    expect(Object.fromEntries(documented)).toEqual(Object.fromEntries(coded));
  });
});

describe('the tracker ends attempts as the table says', () => {
  let t: TestDatabase;
  let clock: ManualClock;
  let metrics: InMemoryMetrics;
  let tracker: CoreTracker;

  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(async () => t.drop());
  beforeEach(async () => {
    await t.db.query('TRUNCATE jobs, job_execution_records');
    clock = new ManualClock('2026-03-01T00:00:00Z');
    metrics = new InMemoryMetrics();
    tracker = new JobTracker({ db: t.db, registry: createCoreRegistry(), clock, metrics });
  });

  const DAY = 86_400_000;
  /** Ends the first attempt of job `id` with each outcome, the way the runtime does. */
  const endWith: Record<ExecutionOutcome, (id: string) => Promise<unknown>> = {
    completed: async (id) => {
      await tracker.fetchReady(1, { startNow: true });
      return tracker.markCompleted(id, 1);
    },
    failed: async (id) => {
      await tracker.fetchReady(1, { startNow: true });
      return tracker.markFailed(id, 1, 'boom');
    },
    lease_expired: async () => {
      await tracker.fetchReady(1, { startNow: true });
      clock.advance(DAY);
      return tracker.rescueExpiredLeases();
    },
    released: async (id) => {
      await tracker.fetchReady(1);
      return tracker.release([{ id, attempt: 1 }]);
    },
    undelivered: async () => {
      await tracker.fetchReady(1);
      clock.advance(DAY);
      return tracker.rescueExpiredLeases();
    },
    retry_requested: async (id) => {
      await tracker.fetchReady(1, { startNow: true });
      return tracker.markFailed(id, 1, 'later', { retryAt: new Date('2026-03-01T06:00:00Z') });
    },
    interrupted: async (id) => {
      await tracker.fetchReady(1, { startNow: true });
      return tracker.markFailed(id, 1, 'worker stopping', { interrupted: true });
    },
    cancelled: async (id) => {
      await tracker.fetchReady(1, { startNow: true });
      return tracker.cancel(id);
    },
  };

  /** What the metrics hear of each outcome (a requested retry and an interruption come as `retrying`). */
  const reported: Record<ExecutionOutcome, AttemptOutcome | null> = {
    completed: 'completed',
    failed: 'retrying',
    lease_expired: 'lease_expired',
    released: null,
    undelivered: null,
    retry_requested: 'retrying',
    interrupted: 'retrying',
    cancelled: null,
  };

  test.each(EXECUTION_OUTCOMES)('%s', async (outcome) => {
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    await endWith[outcome](job.id);
    const row = ATTEMPT_OUTCOMES[outcome];

    const [execution] = await executionRows(t.db, job.id);
    expect(execution?.outcome).toBe(outcome);
    const after = await tracker.requireJob(job.id);
    expect(row.jobAfter).toContain(after.status);

    // An uncounted attempt is handed back: max_attempts and attempt_offset grow with it. (A cancelled job
    // stops; an operator's retry gives it a fresh budget, so its attempt is not handed back.)
    const budget = await t.db.query<{ max_attempts: number; attempt_offset: number }>(
      'SELECT max_attempts, attempt_offset FROM jobs WHERE id = CAST(:id AS uuid)',
      { id: job.id },
    );
    const handedBack =
      budget.rows[0]!.attempt_offset === 1 && budget.rows[0]!.max_attempts === job.maxAttempts + 1;
    expect(handedBack).toBe(!row.counted && outcome !== 'cancelled');

    const heard = Object.entries(metrics.snapshot().outcomes.noop ?? {}).filter(([, n]) => n > 0);
    expect(heard).toEqual(reported[outcome] === null ? [] : [[reported[outcome], 1]]);

    const [stats] = (await tracker.stats()).lastHour;
    expect(stats?.failed ?? 0).toBe(row.failure ? 1 : 0);
  });
});
