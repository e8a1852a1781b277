import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import type { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import type { Database } from '../../shared/db/port.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { type DataApiFixture, dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { createTestRegistry } from '../support/test-job-types.js';

/**
 * The Data API's client sends a statement again when its answer is lost (a reset connection, a 5xx), even
 * if the first send had committed. The executor's start must then still answer with the job: taking its
 * own earlier start for a duplicate delivery would lose the attempt until its lease expired.
 * (The enqueue's resend: `job-client.test.ts`.)
 */
let t: TestDatabase;
let fixture: DataApiFixture;
let dataApi: DataApiDatabase;
const trackerOver = (db: Database) => new JobTracker({ db, registry: createTestRegistry() });
let overDataApi: ReturnType<typeof trackerOver>;
let overPg: ReturnType<typeof trackerOver>;

beforeAll(async () => {
  t = await createTestDatabase();
  fixture = await startDataApiFixture(t.url);
  // The SDK's default retries, as on AWS.
  dataApi = dataApiDriverOver(fixture, t.name, { sdkRetries: true });
  overDataApi = trackerOver(dataApi);
  overPg = trackerOver(t.db);
});
afterAll(async () => {
  await dataApi?.close();
  await fixture?.close();
  await t?.drop();
});
beforeEach(async () => {
  fixture.clearFaults();
  await t.db.query('TRUNCATE jobs, job_execution_records');
});

const loseNextAnswer = () =>
  fixture.injectFault({
    error: 'InternalServerErrorException',
    status: 500,
    operation: 'Execute',
    afterRunning: true,
  });

describe('a start the Data API client sends twice', () => {
  test('answers with the job, and a second delivery of the attempt is still refused', async () => {
    const { job } = await overPg.enqueue({ type: 'noop', payload: { n: 1 } });
    const [claimed] = await overPg.fetchReady(1);
    expect(claimed!.id).toBe(job.id);
    loseNextAnswer();
    fixture.resetCounts();
    const started = await overDataApi.startAttempt(job.id, claimed!.attempts);
    expect(fixture.counts.Execute).toBe(2); // it ran, its answer was lost, and the SDK sent it again
    expect(started).toMatchObject({ id: job.id, status: 'running', attempts: 1 });
    expect(started!.startedAt).not.toBeNull();
    // The start time is the first send's: the resend leaves it.
    const stored = await overPg.getJob(job.id);
    expect(stored!.startedAt).toEqual(started!.startedAt);
    // A duplicate delivery (another call, another token) is refused, over either driver.
    expect(await overDataApi.startAttempt(job.id, claimed!.attempts)).toBeNull();
    expect(await overPg.startAttempt(job.id, claimed!.attempts)).toBeNull();
  });

  test('a start of an attempt that has since finished gets nothing, resent or not', async () => {
    const { job } = await overPg.enqueue({ type: 'noop', payload: { n: 1 } });
    const [claimed] = await overPg.fetchReady(1);
    expect(await overPg.startAttempt(job.id, claimed!.attempts)).not.toBeNull();
    fixture.resetCounts();
    expect(await overPg.markCompleted(job.id, claimed!.attempts)).toBe(true);
    loseNextAnswer();
    // Neither send matches a running attempt: nothing to run, nothing changed.
    expect(await overDataApi.startAttempt(job.id, claimed!.attempts)).toBeNull();
    expect(fixture.counts.Execute).toBeGreaterThanOrEqual(2);
    expect(await overPg.getJob(job.id)).toMatchObject({ status: 'completed', attempts: 1 });
  });
});

describe('a claim the Data API client sends twice', () => {
  test('answers with the jobs its first run claimed, and claims nothing more', async () => {
    await overPg.enqueueMany(
      Array.from({ length: 5 }, (_, n) => ({ type: 'noop' as const, payload: { n } })),
    );
    loseNextAnswer();
    fixture.resetCounts();
    const claimed = await overDataApi.fetchReady(3);
    expect(fixture.counts.Execute).toBe(2); // it ran, its answer was lost, and the SDK sent it again
    expect(claimed).toHaveLength(3);
    const running = await t.db.query<{ id: string }>(
      "SELECT id FROM jobs WHERE status = 'running' ORDER BY id",
    );
    // Exactly the three jobs the caller got are running: none is left running with no event.
    expect(running.rows.map((r) => r.id)).toEqual(claimed.map((c) => c.id).sort());
    expect(await overDataApi.fetchReady(10)).toHaveLength(2);
  });
});

describe('a completion or a failure the Data API client sends twice', () => {
  test('a resent completion reports completed, not fenced out; a second report is still fenced', async () => {
    const { job } = await overPg.enqueue({ type: 'noop', payload: { n: 1 } });
    const [claimed] = await overPg.fetchReady(1);
    expect(await overPg.startAttempt(job.id, claimed!.attempts)).not.toBeNull();
    loseNextAnswer();
    fixture.resetCounts();
    expect(await overDataApi.markCompleted(job.id, claimed!.attempts, { durationMs: 12 })).toBe(true);
    expect(fixture.counts.Execute).toBe(2);
    expect(await overPg.getExecutions(job.id)).toEqual([expect.objectContaining({ outcome: 'completed' })]);
    // Another report of the same attempt (another call) is fenced out, as before.
    expect(await overDataApi.markCompleted(job.id, claimed!.attempts)).toBe(false);
  });

  test('a resent failure reports what it did', async () => {
    const { job } = await overPg.enqueue({ type: 'noop', payload: { n: 1 } });
    const [claimed] = await overPg.fetchReady(1);
    expect(await overPg.startAttempt(job.id, claimed!.attempts)).not.toBeNull();
    loseNextAnswer();
    const failed = await overDataApi.markFailed(job.id, claimed!.attempts, 'the ledger was closed');
    expect(failed).toMatchObject({ id: job.id, status: 'retrying', attempt: 1 });
    expect(await overPg.getExecutions(job.id)).toEqual([expect.objectContaining({ outcome: 'failed' })]);
    expect(await overDataApi.markFailed(job.id, claimed!.attempts, 'again')).toBeNull();
  });
});
