import { afterAll, beforeAll, expect, test } from 'vitest';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { createTestRegistry } from '../support/test-job-types.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());

test('enqueue, claim, complete', async () => {
  const clock = new ManualClock('2026-03-01T00:00:00Z');
  const tracker = new JobTracker({ db: t.db, registry: createTestRegistry(), clock });
  const { job, created } = await tracker.enqueue({ type: 'noop', payload: { n: 1 } });
  expect(created).toBe(true);
  expect(job.status).toBe('pending');
  const claimed = await tracker.fetchReady(10);
  expect(claimed.map((j) => j.id)).toEqual([job.id]);
  expect(claimed[0]!.attempts).toBe(1);
  expect(await tracker.startAttempt(job.id, 1)).not.toBeNull();
  expect(await tracker.startAttempt(job.id, 1)).toBeNull();
  expect(await tracker.markCompleted(job.id, 1)).toBe(true);
  expect(await tracker.markCompleted(job.id, 1)).toBe(false);
  const execs = await tracker.getExecutions(job.id);
  expect(execs).toHaveLength(1);
  expect(execs[0]!.finishedAt).not.toBeNull();
  expect(execs[0]!.outcome).toBe('completed');
});
