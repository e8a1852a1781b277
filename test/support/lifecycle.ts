import { z } from 'zod';
import type { Database, Queryable, QueryResult, Row, SqlParams } from '../../shared/db/port.js';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { PermanentJobError, RetryJobLater } from '../../shared/jobs/errors.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { createTestRegistry, type TestServices } from './test-job-types.js';

/**
 * Helpers for the core lifecycle tests: the test job types plus a few that exercise the executor's other
 * outcomes (ask to retry later, fail permanently), and small database probes.
 */
export function createCoreRegistry() {
  return createTestRegistry()
    .register({
      type: 'retry-later',
      description: 'asks to be run again at the time in its payload',
      schema: z.object({ at: z.string() }),
      execute: async (payload, ctx) => {
        ctx.services.runs.push({ type: 'retry-later', payload, attempt: ctx.attempt });
        return new RetryJobLater(new Date(payload.at), 'the ledger is closed until then');
      },
    })
    .register({
      type: 'permanent-fails',
      description: 'fails with an error retrying cannot fix',
      schema: z.object({}),
      execute: async (payload, ctx) => {
        ctx.services.runs.push({ type: 'permanent-fails', payload, attempt: ctx.attempt });
        throw new PermanentJobError('the facility no longer exists');
      },
    });
}

export type CoreRegistry = ReturnType<typeof createCoreRegistry>;
export type CoreTracker = JobTracker<CoreRegistry['schemas'], TestServices>;

/** A tracker on a manual clock, a dispatcher and the services its executors write to. */
export function coreKit(db: Database, start = '2026-03-01T00:00:00Z') {
  const clock = new ManualClock(start);
  const registry = createCoreRegistry();
  const tracker: CoreTracker = new JobTracker({ db, registry, clock });
  const services: TestServices = { runs: [] };
  const dispatcher = new JobDispatcher(registry, services);
  return { clock, registry, tracker, services, dispatcher };
}

export const MINUTE = 60_000;

export function minutesBetween(from: Date, to: Date): number {
  return (to.getTime() - from.getTime()) / MINUTE;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `condition` until it holds; throws (failing the test) after `timeoutMs`. */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  { timeoutMs = 5000, intervalMs = 5, what = 'condition' } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

export async function countJobs(db: Queryable, where = 'true'): Promise<number> {
  const res = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM jobs WHERE ${where}`);
  return res.rows[0]!.n;
}

/** `{ status: count }` over the whole table. */
export async function statusCounts(db: Queryable): Promise<Record<string, number>> {
  const res = await db.query<{ status: string; n: number }>(
    'SELECT status, count(*)::int AS n FROM jobs GROUP BY status ORDER BY status',
  );
  return Object.fromEntries(res.rows.map((r) => [r.status, r.n]));
}

export interface ExecutionRecord {
  job_id: string;
  attempt: number;
  claimed_at: Date;
  started_at: Date | null;
  finished_at: Date;
  outcome: string;
  error: string | null;
  duration_ms: number | null;
  [column: string]: unknown;
}

/** The stored `job_executions` rows (finished attempts only), by job then attempt. */
export async function executionRows(db: Queryable, jobId?: string): Promise<ExecutionRecord[]> {
  const res = await db.query<ExecutionRecord>(
    `SELECT job_id::text, attempt, claimed_at, started_at, finished_at, outcome, error, duration_ms
     FROM job_executions WHERE CAST(:id AS uuid) IS NULL OR job_id = CAST(:id AS uuid)
     ORDER BY job_id, attempt`,
    { id: jobId ?? null },
  );
  return res.rows;
}

/** Wraps a queryable and counts the statements sent through it. */
export function countingQueryable(inner: Queryable): Queryable & { statements: string[] } {
  const statements: string[] = [];
  return {
    statements,
    query<R extends Row = Row>(sql: string, params?: SqlParams): Promise<QueryResult<R>> {
      statements.push(sql);
      return inner.query<R>(sql, params);
    },
  };
}

/** A deferred: a promise with its resolve function, for gating steps of a test. */
export function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/**
 * A `Database` whose every statement goes through `q` (an open transaction, a counting wrapper), so a
 * tracker can be pointed at it. It has no transactions of its own.
 */
export function asDatabase(q: Queryable): Database {
  return {
    driverName: 'pg',
    query: (sql, params) => q.query(sql, params),
    transaction: () => Promise.reject(new Error('asDatabase: no nested transactions')),
    close: async () => {},
  };
}
