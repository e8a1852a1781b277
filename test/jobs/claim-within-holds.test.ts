import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { z } from 'zod';
import type { Database } from '../../shared/db/port.js';
import type { WorkerSlots } from '../../shared/jobs/attempts.js';
import { JobTypeRegistry } from '../../shared/jobs/registry.js';
import { claimLimitedForWorkerSql, claimWithinHoldsSql } from '../../shared/jobs/sql.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { createTestDatabase } from '../support/database.js';

/**
 * A worker's claim within the slots it holds (`claimWithinHoldsSql`): when it needs not settle its holds,
 * it claims the jobs the full claim (`lana_jobs_claim_slotted`) would, without reading or writing a slot;
 * when a limited type due is one it holds no slot of, a type is paused or a limited type is due at several
 * priorities or with a key or rate limit, it makes the full claim instead; when it may hold more slots for jobs left due, the full
 * claim takes them.
 */
const registry = () =>
  new JobTypeRegistry()
    .register({
      type: 'alpha',
      description: 'limited',
      schema: z.object({ n: z.number().int() }),
      concurrency: 4,
      execute: async () => undefined,
    })
    .register({
      type: 'beta',
      description: 'limited',
      schema: z.object({ n: z.number().int() }),
      concurrency: 2,
      execute: async () => undefined,
    })
    .register({
      type: 'gamma',
      description: 'no limit',
      schema: z.object({ n: z.number().int() }),
      execute: async () => undefined,
    })
    .register({
      type: 'keyed',
      description: 'limited, and per key',
      schema: z.object({ n: z.number().int() }),
      concurrency: 4,
      concurrencyKey: { field: 'n', limit: 1 },
      execute: async () => undefined,
    })
    .register({
      type: 'paced',
      description: 'limited, and by a rate',
      schema: z.object({ n: z.number().int() }),
      concurrency: 4,
      rateLimit: { limit: 5, perSeconds: 1 },
      execute: async () => undefined,
    });
type Types = ReturnType<typeof registry>['schemas'];
type JobType = 'alpha' | 'beta' | 'gamma' | 'keyed' | 'paced';

const WORKER = '00000000-0000-7000-8000-00000000000a';

/** A database with a tracker whose statements are recorded (by which claim statement they are). */
async function scene() {
  const t = await createTestDatabase();
  const statements: string[] = [];
  const db = new Proxy(t.db, {
    get(target, prop) {
      if (prop === 'query')
        return (text: string, params?: Parameters<Database['query']>[1]) => {
          if (text === claimWithinHoldsSql) statements.push('within holds');
          if (text === claimLimitedForWorkerSql) statements.push('full');
          return target.query(text, params);
        };
      const value = Reflect.get(target, prop);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  const tracker = new JobTracker<Types>({ db, registry: registry() });
  const enqueue = (type: JobType, n: number, priority?: number) =>
    tracker.enqueueMany(
      Array.from({ length: n }, (_, i) => ({
        type,
        payload: { n: i },
        ...(priority === undefined ? {} : { priority }),
      })),
    );
  /** Takes `n` of a type's slots for the worker (a settling claim of `n` due jobs), and completes those jobs. */
  const hold = async (type: 'alpha' | 'beta', n: number) => {
    await enqueue(type, n);
    const taken = await tracker.claimForWorker(n, { worker: WORKER, concurrency: 10, inHand: {} });
    expect(taken.held[type]).toBe(n);
    await tracker.completeMany(taken.jobs.map((j) => ({ id: j.id, attempt: j.attempts })));
    statements.length = 0;
  };
  /** Each slot row as it stands (xmin changes with any write to it). */
  const slotRows = async () =>
    (
      await t.db.query<{ job_type: string; slot: number; xmin: string; holder: string | null }>(
        'SELECT job_type, slot, xmin::text AS xmin, holder::text AS holder FROM job_slots ORDER BY job_type, slot',
      )
    ).rows;
  return { t, tracker, statements, enqueue, hold, slotRows };
}

const within = (held: Record<string, number>, inHand: Record<string, number> = {}): WorkerSlots => ({
  worker: WORKER,
  concurrency: 10,
  inHand,
  settle: false,
  held,
});

/** A claim's jobs as `type:n`, in claim order. */
const named = (jobs: { jobType: string; payload: unknown }[]) =>
  jobs.map((j) => `${j.jobType}:${(j.payload as { n: number }).n}`);

let s: Awaited<ReturnType<typeof scene>>;
beforeAll(async () => {
  s = await scene();
});
afterAll(async () => s?.t.drop());
beforeEach(async () => {
  await s.t.db.query('TRUNCATE jobs, job_execution_records, job_type_pauses CASCADE');
  s.statements.length = 0;
});

describe('a claim within the slots a worker holds', () => {
  test('claims each type in claim order, a limited type up to its share, and reads or writes no slot', async () => {
    await s.hold('alpha', 4);
    await s.enqueue('alpha', 8);
    await s.enqueue('gamma', 2, -1);
    const before = await s.slotRows();
    // A claim of 10 holding all 4 of alpha's slots, none in hand: alpha's share is max(4, ceil(10 × 4 / 10)).
    const claim = await s.tracker.claimForWorker(10, within({ alpha: 4 }));
    expect(named(claim.jobs)).toEqual(['gamma:0', 'gamma:1', 'alpha:0', 'alpha:1', 'alpha:2', 'alpha:3']);
    expect(claim.held).toEqual({ alpha: 4 });
    expect(claim.leftBehind).toBe(true);
    expect(s.statements).toEqual(['within holds']);
    expect(claim.missedWithinHolds).toBeUndefined();
    expect(await s.slotRows()).toEqual(before);
  });

  test('claims the jobs the full claim claims', async () => {
    const other = await scene();
    try {
      for (const x of [s, other]) {
        await x.hold('alpha', 4);
        await x.hold('beta', 2);
        await x.enqueue('alpha', 6);
        await x.enqueue('beta', 3);
        await x.enqueue('gamma', 3, 1);
        await x.enqueue('gamma', 2, -1);
      }
      const fast = await s.tracker.claimForWorker(9, within({ alpha: 4, beta: 2 }, { alpha: 1 }));
      const full = await other.tracker.claimForWorker(9, {
        worker: WORKER,
        concurrency: 10,
        inHand: { alpha: 1 },
      });
      expect(s.statements).toEqual(['within holds']);
      expect(other.statements).toEqual(['full']);
      expect(named(fast.jobs)).toEqual(named(full.jobs));
      expect(named(fast.jobs)).toEqual([
        'gamma:0',
        'gamma:1',
        'alpha:0',
        'alpha:1',
        'alpha:2',
        'alpha:3',
        'beta:0',
        'beta:1',
        'gamma:0',
      ]);
    } finally {
      await other.t.drop();
    }
  });

  test('a limited type due that it holds no slot of: the full claim takes its slots', async () => {
    await s.hold('alpha', 2);
    await s.enqueue('beta', 2);
    const claim = await s.tracker.claimForWorker(10, within({ alpha: 2 }));
    expect(named(claim.jobs)).toEqual(['beta:0', 'beta:1']);
    expect(claim.held).toEqual({ alpha: 2, beta: 2 });
    // Once it holds beta's slots it claims within them again: no reason to stop trying.
    expect(claim.missedWithinHolds).toBeUndefined();
    expect(s.statements).toEqual(['within holds', 'full']);
  });

  test('more due than its slots take, with more slots it may hold: the full claim takes them', async () => {
    await s.hold('alpha', 1);
    await s.enqueue('alpha', 3);
    const claim = await s.tracker.claimForWorker(10, within({ alpha: 1 }));
    expect(named(claim.jobs)).toEqual(['alpha:0', 'alpha:1', 'alpha:2']);
    expect(claim.held).toEqual({ alpha: 3 });
    // It applied: the full claim only took more slots.
    expect(claim.missedWithinHolds).toBeUndefined();
    expect(s.statements).toEqual(['within holds', 'full']);
  });

  test('a paused type, or a limited type due at two priorities: the full claim', async () => {
    await s.hold('alpha', 4);
    await s.enqueue('alpha', 1, 1);
    await s.enqueue('alpha', 1, 2);
    const twoPriorities = await s.tracker.claimForWorker(10, within({ alpha: 4 }));
    expect(named(twoPriorities.jobs)).toEqual(['alpha:0', 'alpha:0']);
    expect(twoPriorities.missedWithinHolds).toBe(true);
    expect(s.statements).toEqual(['within holds', 'full']);

    s.statements.length = 0;
    await s.tracker.pauseType('gamma', { by: 'test' });
    await s.enqueue('gamma', 1);
    await s.enqueue('alpha', 1);
    const paused = await s.tracker.claimForWorker(10, within({ alpha: 4 }));
    expect(named(paused.jobs)).toEqual(['alpha:0']);
    expect(paused.missedWithinHolds).toBe(true);
    expect(s.statements).toEqual(['within holds', 'full']);
  });

  test('a limited type due with a key or a rate limit: the full claim, as long as those are due', async () => {
    await s.hold('alpha', 4);
    for (const type of ['keyed', 'paced'] as const) {
      s.statements.length = 0;
      await s.enqueue(type, 1);
      await s.enqueue('alpha', 1);
      const claim = await s.tracker.claimForWorker(10, within({ alpha: 4 }));
      expect(named(claim.jobs).sort()).toEqual(['alpha:0', `${type}:0`]);
      expect(claim.missedWithinHolds).toBe(true);
      expect(s.statements).toEqual(['within holds', 'full']);
      await s.tracker.completeMany(claim.jobs.map((j) => ({ id: j.id, attempt: j.attempts })));
    }
    // None of them due: within holds again.
    s.statements.length = 0;
    await s.enqueue('alpha', 1);
    const alone = await s.tracker.claimForWorker(10, within({ alpha: 4 }));
    expect(named(alone.jobs)).toEqual(['alpha:0']);
    expect(alone.missedWithinHolds).toBeUndefined();
    expect(s.statements).toEqual(['within holds']);
  });

  test('a worker told to skip the claim within holds makes the full claim alone', async () => {
    await s.hold('alpha', 4);
    await s.enqueue('alpha', 2);
    const claim = await s.tracker.claimForWorker(10, { ...within({ alpha: 4 }), withinHolds: false });
    expect(named(claim.jobs)).toEqual(['alpha:0', 'alpha:1']);
    expect(s.statements).toEqual(['full']);
  });
});
