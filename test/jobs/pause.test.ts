import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { z } from 'zod';
import type { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import type { Database } from '../../shared/db/port.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { JobInputError } from '../../shared/jobs/errors.js';
import { JobTypeRegistry } from '../../shared/jobs/registry.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { Worker } from '../../shared/runtime/worker.js';
import { type DataApiFixture, dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * Pausing a job type (migration 0015): no claim takes its due jobs (the plain claims, the limited claim,
 * an executor's next job, a local worker's claim), running jobs finish, nothing is counted, and a resume
 * lets them run again at once.
 */
const schema = z.object({ n: z.number().int() });
const ran: string[] = [];
const execute = (type: string) => async (): Promise<undefined> => {
  ran.push(type);
  return undefined;
};
/** No limits: the plain claims. */
const plainRegistry = () =>
  new JobTypeRegistry()
    .register({ type: 'mail', description: 'd', schema, execute: execute('mail') })
    .register({ type: 'sync', description: 'd', schema, execute: execute('sync') });
/** A limited type: every claim goes through `lana_jobs_claim_slotted`. */
const limitedRegistry = () =>
  new JobTypeRegistry()
    .register({ type: 'mail', description: 'd', schema, concurrency: 5, execute: execute('mail') })
    .register({ type: 'sync', description: 'd', schema, execute: execute('sync') });

let t: TestDatabase;
let fixture: DataApiFixture;
let dataApi: DataApiDatabase;

beforeAll(async () => {
  t = await createTestDatabase({ poolSize: 6 });
  fixture = await startDataApiFixture(t.url);
  dataApi = dataApiDriverOver(fixture, t.name);
});
afterAll(async () => {
  await dataApi?.close();
  await fixture?.close();
  await t?.drop();
});
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_execution_records, job_type_pauses CASCADE');
  ran.length = 0;
});

type Tracker = JobTracker<ReturnType<typeof plainRegistry>['schemas']>;

async function enqueue(tracker: Tracker, type: 'mail' | 'sync', n: number) {
  await tracker.enqueueMany(Array.from({ length: n }, (_, i) => ({ type, payload: { n: i } })));
}

async function untouched(type: string) {
  const r = await t.db.query<{ n: number }>(
    "SELECT count(*)::integer AS n FROM jobs WHERE job_type = :type AND status = 'pending' AND attempts = 0",
    { type },
  );
  return r.rows[0]!.n;
}

describe.each([
  ['node-postgres', 'no limits', () => t.db as Database, plainRegistry],
  ['Data API', 'no limits', () => dataApi as Database, plainRegistry],
  ['node-postgres', 'a limited type', () => t.db as Database, limitedRegistry],
  ['Data API', 'a limited type', () => dataApi as Database, limitedRegistry],
])('a paused type is not claimed (%s, %s)', (_driver, _limits, db, registry) => {
  const trackerOver = () => new JobTracker({ db: db(), registry: registry() }) as Tracker;

  test('fetch-ready and one-type claims leave its due jobs, and take them again after resume', async () => {
    const tracker = trackerOver();
    await enqueue(tracker, 'mail', 4);
    await enqueue(tracker, 'sync', 3);
    const { pause, created } = await tracker.pauseType('mail', { by: 'ops', reason: 'SES down' });
    expect(created).toBe(true);
    expect(pause).toMatchObject({ jobType: 'mail', pausedBy: 'ops', reason: 'SES down' });

    const claimed = await tracker.fetchReady(10);
    expect(claimed.map((j) => j.jobType)).toEqual(['sync', 'sync', 'sync']);
    expect(await tracker.fetchReady(10, { jobType: 'mail' })).toEqual([]);
    // Nothing counted: the paused jobs are as they were enqueued.
    expect(await untouched('mail')).toBe(4);

    expect(await tracker.resumeType('mail')).toMatchObject({ jobType: 'mail', pausedBy: 'ops' });
    expect(await tracker.resumeType('mail')).toBeNull();
    expect((await tracker.fetchReady(10)).map((j) => j.jobType)).toEqual(['mail', 'mail', 'mail', 'mail']);
  });

  test("a local worker's claim leaves it", async () => {
    const tracker = trackerOver();
    await enqueue(tracker, 'mail', 2);
    await enqueue(tracker, 'sync', 2);
    await tracker.pauseType('mail', { by: 'ops' });
    const worker = 'c4a1b3c2-1111-4222-8333-444455556666';
    const claim = await tracker.claimForWorker(10, { worker, concurrency: 4, inHand: {} });
    expect(claim.jobs.map((j) => j.jobType)).toEqual(['sync', 'sync']);
    expect(await untouched('mail')).toBe(2);
    // Only paused jobs are left: nothing to ask again for (a worker does not spin on them).
    expect(claim.nextDueAt).toBeNull();
  });

  test("an executor's next job skips a paused type; its running job still completes", async () => {
    const tracker = trackerOver();
    await enqueue(tracker, 'mail', 3);
    const [running] = await tracker.fetchReady(1, { jobType: 'mail' });
    await tracker.pauseType('mail', { by: 'ops' });
    const { completed, next } = await tracker.completeAndClaimNext(
      { id: running!.id, attempt: running!.attempts },
      'mail',
    );
    expect(completed).toBe(true);
    expect(next).toBeNull();
    expect(await untouched('mail')).toBe(2);
    const row = await t.db.query<{ status: string }>('SELECT status FROM jobs WHERE id = CAST(:id AS uuid)', {
      id: running!.id,
    });
    expect(row.rows[0]!.status).toBe('completed');
  });

  test('pausing a paused type keeps the first pause; an unknown type is refused, nothing written', async () => {
    const tracker = trackerOver();
    await tracker.pauseType('mail', { by: 'first', reason: 'one' });
    const again = await tracker.pauseType('mail', { by: 'second', reason: 'two' });
    expect(again).toMatchObject({ created: false, pause: { pausedBy: 'first', reason: 'one' } });
    await expect(tracker.pauseType('nope', { by: 'ops' })).rejects.toThrow(JobInputError);
    await expect(tracker.resumeType('nope')).rejects.toThrow(/unknown job type "nope"/);
    await expect(tracker.pauseType('sync', { by: '  ' })).rejects.toThrow(JobInputError);
    expect((await tracker.pausedTypes()).map((p) => p.jobType)).toEqual(['mail']);
    expect((await tracker.stats()).paused.map((p) => [p.jobType, p.reason])).toEqual([['mail', 'one']]);
  });
});

describe('local workers and a paused type', () => {
  test('a worker runs nothing of a paused type, does not poll for it, and runs it at once on resume', async () => {
    const registry = plainRegistry();
    // Count the worker's claims: a worker spinning on paused jobs would claim again and again.
    let claims = 0;
    const counting: Database = Object.create(t.db, {
      query: {
        value: (text: string, params?: unknown) => {
          if (text.includes('lana_jobs_claim_slotted') || text.includes('ready_priorities')) claims++;
          return (t.db.query as (a: string, b?: unknown) => ReturnType<Database['query']>)(text, params);
        },
      },
    });
    const tracker = new JobTracker({ db: counting, registry }) as Tracker;
    await tracker.pauseType('mail', { by: 'ops' });
    await enqueue(tracker, 'mail', 5);
    await enqueue(tracker, 'sync', 2);
    const listener = new pg.Client({ connectionString: t.url });
    await listener.connect();
    const worker = new Worker({
      tracker,
      dispatcher: new JobDispatcher(registry, {}),
      concurrency: 4,
      listen: (onNotify) => t.db.listen('lana_jobs', onNotify),
    });
    try {
      await worker.start();
      await expect.poll(() => ran.filter((x) => x === 'sync').length, { timeout: 5000 }).toBe(2);
      await worker.idle();
      const settled = claims;
      await new Promise((r) => setTimeout(r, 1500));
      expect(ran).not.toContain('mail');
      expect(await untouched('mail')).toBe(5);
      // No claim for a second and a half: the paused jobs do not keep the worker busy.
      expect(claims - settled).toBe(0);

      const resumedAt = performance.now();
      await tracker.resumeType('mail');
      await expect.poll(() => ran.filter((x) => x === 'mail').length, { timeout: 5000 }).toBe(5);
      // Woken by the resume's NOTIFY, not by a poll.
      expect(performance.now() - resumedAt).toBeLessThan(1000);
    } finally {
      await worker.stop();
      await listener.end();
    }
  });
});

describe('an eager start and a paused type', () => {
  test('a job of a paused type enqueued beside an idle worker waits, instead of starting at once', async () => {
    const registry = plainRegistry();
    const tracker = new JobTracker({ db: t.db, registry }) as Tracker;
    const worker = new Worker({
      tracker,
      dispatcher: new JobDispatcher(registry, {}),
      concurrency: 4,
      listen: (onNotify) => t.db.listen('lana_jobs', onNotify),
    });
    await worker.start();
    try {
      // The worker is idle and starts a job enqueued beside it eagerly: it comes back running.
      await expect
        .poll(async () => (await tracker.enqueue({ type: 'sync', payload: { n: 0 } })).job.status, {
          timeout: 15_000,
        })
        .toBe('running');
      await tracker.pauseType('mail', { by: 'ops' });
      const { job } = await tracker.enqueue({ type: 'mail', payload: { n: 1 } });
      expect(job.status).toBe('pending');
      await new Promise((r) => setTimeout(r, 300));
      expect(await untouched('mail')).toBe(1);
      await tracker.resumeType('mail');
      await expect
        .poll(async () => (await tracker.getJob(job.id))?.status, { timeout: 5000 })
        .toBe('completed');
    } finally {
      await worker.stop();
    }
  });
});
