import { afterAll, beforeAll, beforeEach, expect, test } from 'vitest';
import { z } from 'zod';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobTypeRegistry } from '../../shared/jobs/registry.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * The limited claim (job types with concurrency limits) serves priorities first across types, as the
 * plain claim does: a claim smaller than the due jobs never takes a worse-priority job of one type while a
 * better-priority job of another type waits.
 */
function registry() {
  const execute = async () => undefined;
  return new JobTypeRegistry()
    .register({ type: 'capped', description: 'x', schema: z.object({}), concurrency: 3, execute })
    .register({ type: 'free', description: 'y', schema: z.object({}), execute });
}

let t: TestDatabase;
let tracker: JobTracker<ReturnType<typeof registry>['schemas'], Record<never, never>>;

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_execution_records CASCADE');
  tracker = new JobTracker({
    db: t.db,
    registry: registry(),
    clock: new ManualClock('2026-06-01T00:00:00Z'),
  });
});

async function enqueue(type: 'capped' | 'free', priority: number, n: number) {
  await tracker.enqueueMany(Array.from({ length: n }, () => ({ type, payload: {}, priority })));
}
const summary = (jobs: { jobType: string; priority: number }[]) =>
  jobs.map((j) => `${j.jobType}@${j.priority}`);

test("a short claim takes another type's better priority before a type's worse one", async () => {
  await enqueue('capped', 0, 1);
  await enqueue('capped', 5, 2);
  await enqueue('free', 1, 3);
  expect(summary(await tracker.fetchReady(4))).toEqual(['capped@0', 'free@1', 'free@1', 'free@1']);
  expect(summary(await tracker.fetchReady(4))).toEqual(['capped@5', 'capped@5']);
});

test("a limited type's free slots are shared by all its priorities in one claim", async () => {
  await enqueue('capped', 0, 2);
  await enqueue('capped', 2, 3);
  await enqueue('free', 1, 2);
  await enqueue('free', 3, 1);
  // capped has 3 slots: two at priority 0 and one at priority 2; free takes all of its jobs.
  expect(summary(await tracker.fetchReady(10))).toEqual([
    'capped@0',
    'capped@0',
    'free@1',
    'free@1',
    'capped@2',
    'free@3',
  ]);
  expect(await tracker.fetchReady(10)).toEqual([]);
});

test('a claim for one type walks its priorities in order', async () => {
  await enqueue('capped', 4, 1);
  await enqueue('capped', -2, 1);
  await enqueue('free', -5, 1);
  expect(summary(await tracker.fetchReady(1, { jobType: 'capped' }))).toEqual(['capped@-2']);
  expect(summary(await tracker.fetchReady(5, { jobType: 'capped' }))).toEqual(['capped@4']);
});
