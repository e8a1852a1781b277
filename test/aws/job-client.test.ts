import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import * as z from 'zod';
import { AwsJobClient } from '../../shared/aws/job-client.js';
import type { Database } from '../../shared/db/port.js';
import { ManualClock } from '../../shared/jobs/clock.js';
import { createdJobDueNow, JobTracker } from '../../shared/jobs/tracker.js';
import { type DataApiFixture, dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { createTestRegistry } from '../support/test-job-types.js';

let t: TestDatabase;
let fixture: DataApiFixture;
const saved = { ...process.env };
const eventBridge = new EventBridgeClient({ region: 'us-east-1' });
const bus = mockClient(eventBridge);

beforeAll(async () => {
  t = await createTestDatabase();
  fixture = await startDataApiFixture(t.url);
  // The SDK's own settings, for the Data API client the job client makes from the environment.
  Object.assign(process.env, {
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
  });
});
afterAll(async () => {
  process.env = saved;
  bus.restore();
  await fixture.close();
  await t.drop();
});
beforeEach(async () => {
  bus.reset();
  bus.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: '1' }] });
  await t.db.query('TRUNCATE jobs, job_execution_records');
});

const env = () => ({
  DATA_API_RESOURCE_ARN: 'arn:aws:rds:us-east-1:123456789012:cluster:lana-jobs',
  DATA_API_SECRET_ARN: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:lana-jobs',
  DATA_API_DATABASE: t.name,
  DATA_API_ENDPOINT: fixture.endpoint,
  JOBS_BUS_NAME: 'lana-jobs-bus',
});
const nudges = () => bus.commandCalls(PutEventsCommand).map((c) => c.args[0].input.Entries);

describe('AwsJobClient: enqueue from application code on AWS', () => {
  test('a job due now is written through the Data API, then fetch-ready is woken once', async () => {
    let now = Date.parse('2026-06-01T00:00:00Z');
    const client = new AwsJobClient({
      registry: createTestRegistry(),
      env: env(),
      eventBridge,
      nowMs: () => now,
      startDueJobs: false,
    });
    fixture.resetCounts();
    const { job, created } = await client.enqueue({ type: 'noop', payload: { n: 1 } });
    expect(created).toBe(true);
    expect(fixture.counts.Execute).toBe(1);
    const stored = await t.db.query<{ status: string }>(
      'SELECT status FROM jobs WHERE id = CAST(:id AS uuid)',
      {
        id: job.id,
      },
    );
    expect(stored.rows).toEqual([{ status: 'pending' }]);
    expect(nudges()).toEqual([
      [
        {
          EventBusName: 'lana-jobs-bus',
          Source: 'lana.jobs',
          DetailType: 'jobs.enqueued',
          Detail: expect.stringContaining('"reason":"enqueued"'),
        },
      ],
    ]);
    // Inside the nudge window, nothing more is sent: the run it woke claims again at the window's end.
    await client.enqueue({ type: 'noop', payload: { n: 4 } });
    expect(nudges()).toHaveLength(1);
    // After the window, a batch of several due jobs: one nudge.
    now += 1_000;
    await client.enqueueMany([
      { type: 'noop', payload: { n: 2 } },
      { type: 'noop', payload: { n: 3 } },
    ]);
    expect(nudges()).toHaveLength(2);
    await client.close();
  });

  test('an enqueue whose answer is lost after it committed, and which the SDK sends again, succeeds once', async () => {
    // The enqueue alone: its jobs stay pending (a lone job would otherwise be started at once).
    const client = new AwsJobClient({
      registry: createTestRegistry(),
      env: env(),
      eventBridge,
      startDueJobs: false,
    });
    const existing = await client.enqueue({ type: 'noop', payload: { n: 0 }, idempotencyKey: 'taken' });
    const batches: { type: 'noop'; payload: { n: number }; idempotencyKey?: string }[][] = [
      [{ type: 'noop', payload: { n: 1 } }],
      [{ type: 'noop', payload: { n: 1 }, idempotencyKey: 'k1' }],
      [
        { type: 'noop', payload: { n: 2 } },
        { type: 'noop', payload: { n: 3 }, idempotencyKey: 'k3' },
        { type: 'noop', payload: { n: 0 }, idempotencyKey: 'taken' },
      ],
    ];
    for (const batch of batches) {
      // The statement runs and commits, then its answer is lost (a 5xx): the SDK retries it by itself.
      fixture.injectFault({
        error: 'InternalServerErrorException',
        status: 500,
        operation: 'Execute',
        afterRunning: true,
      });
      fixture.resetCounts();
      const results = await client.enqueueMany(batch);
      expect(fixture.counts.Execute).toBeGreaterThanOrEqual(2);
      expect(results.map((r) => r.created)).toEqual(batch.map((j) => j.idempotencyKey !== 'taken'));
      for (const [i, j] of batch.entries())
        if (j.idempotencyKey === 'taken') expect(results[i]!.job.id).toBe(existing.job.id);
      for (const [i, { job }] of results.entries()) {
        expect(job).toMatchObject({ jobType: 'noop', payload: batch[i]!.payload, status: 'pending' });
        const stored = await t.db.query<{ created_at: Date }>(
          'SELECT created_at FROM jobs WHERE id = CAST(:id AS uuid)',
          { id: job.id },
        );
        expect(stored.rows).toEqual([{ created_at: job.createdAt }]);
      }
    }
    // One row per job asked for: nothing written twice, nothing lost.
    const count = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs');
    expect(count.rows[0]!.n).toBe(1 + 1 + 1 + 2);
    await client.close();
  });

  test('no nudge for a job scheduled ahead, a key already taken, or an enqueue inside a transaction', async () => {
    // No coalescing window here, so that every nudge this client would send is seen.
    const client = new AwsJobClient({
      registry: createTestRegistry(),
      env: env(),
      eventBridge,
      nudgeWindowMs: 0,
      startDueJobs: false,
    });
    await client.enqueue({ type: 'noop', payload: { n: 1 }, runAt: new Date(Date.now() + 3_600_000) });
    expect(nudges()).toHaveLength(0);
    const first = await client.enqueue({ type: 'noop', payload: { n: 2 }, idempotencyKey: 'k' });
    expect(nudges()).toHaveLength(1);
    const again = await client.enqueue({ type: 'noop', payload: { n: 2 }, idempotencyKey: 'k' });
    expect(again).toMatchObject({ created: false, job: { id: first.job.id } });
    expect(nudges()).toHaveLength(1);
    // In the caller's transaction the job is invisible until the commit: the caller wakes the workers after.
    const inTx = await client.tracker.db.transaction((tx) =>
      client.enqueueUntyped([{ type: 'noop', payload: { n: 3 } }], { db: tx }),
    );
    expect(inTx[0]!.created).toBe(true);
    expect(nudges()).toHaveLength(1);
    expect(await client.wakeWorkers()).toBe(true);
    expect(nudges()).toHaveLength(2);
    await client.close();
  });

  test('a debounced enqueue through the Data API joins its burst, with a resend after commit counted once', async () => {
    const client = new AwsJobClient({ registry: createTestRegistry(), env: env(), eventBridge });
    const debounce = { key: 'facility:1', windowSeconds: 30 };
    const resentAfterCommit = () =>
      fixture.injectFault({
        error: 'InternalServerErrorException',
        status: 500,
        operation: 'Execute',
        afterRunning: true,
      });
    // The insert commits and its answer is lost: the resend finds its own row, created by this call.
    resentAfterCommit();
    const first = await client.enqueue({ type: 'noop', payload: { n: 1 }, debounce });
    expect(first.created).toBe(true);
    // The same for a replacement: the resend replaces the payload again, with the same one.
    resentAfterCommit();
    const second = await client.enqueue({ type: 'noop', payload: { n: 2 }, debounce });
    expect(second).toMatchObject({ created: false, job: { id: first.job.id, payload: { n: 2 } } });
    const stored = await t.db.query<{ id: string; payload: string }>(
      'SELECT id, payload::text AS payload FROM jobs',
    );
    expect(stored.rows).toEqual([{ id: first.job.id, payload: '{"n": 2}' }]);
    // Due when its window ends: nothing to wake or start now (fetch-ready's minute takes it).
    expect(nudges()).toEqual([]);
    await client.close();
  });

  test('a failed nudge does not fail the enqueue: the job is committed and the error reported', async () => {
    bus.on(PutEventsCommand).rejects(new Error('throttled'));
    const errors: unknown[] = [];
    const client = new AwsJobClient({
      registry: createTestRegistry(),
      env: env(),
      eventBridge,
      onNudgeError: (e) => errors.push(e),
    });
    const { job } = await client.enqueue({ type: 'noop', payload: { n: 1 } });
    expect(errors).toEqual([expect.objectContaining({ message: 'throttled' })]);
    expect((await client.tracker.getJob(job.id))?.status).toBe('pending');
    await client.close();
  });

  test('an event PutEvents answers but rejects is a failed nudge; a reporter that throws fails nothing', async () => {
    bus.on(PutEventsCommand).resolves({
      FailedEntryCount: 1,
      Entries: [{ ErrorCode: 'ThrottlingException', ErrorMessage: 'Rate exceeded' }],
    });
    const errors: unknown[] = [];
    const reporting = new AwsJobClient({
      registry: createTestRegistry(),
      env: env(),
      eventBridge,
      onNudgeError: (e) => errors.push(e),
    });
    expect(await reporting.wakeWorkers()).toBe(false);
    expect(errors).toEqual([
      expect.objectContaining({ message: expect.stringMatching(/ThrottlingException: Rate exceeded/) }),
    ]);
    await reporting.close();
    // The job is committed before the nudge: an error from the reporter must not make the caller retry it.
    const throwing = new AwsJobClient({
      registry: createTestRegistry(),
      env: env(),
      eventBridge,
      onNudgeError: () => {
        throw new Error('reporter broke');
      },
    });
    const { job, created } = await throwing.enqueue({ type: 'noop', payload: { n: 1 } });
    expect(created).toBe(true);
    expect((await throwing.tracker.getJob(job.id))?.status).toBe('pending');
    await throwing.close();
  });

  test('bad input is refused before anything is written or sent', async () => {
    const client = new AwsJobClient({ registry: createTestRegistry(), env: env(), eventBridge });
    await expect(client.enqueueUntyped([{ type: 'no-such-type', payload: {} }])).rejects.toThrow(
      /no-such-type/,
    );
    await expect(client.enqueueUntyped([{ type: 'noop', payload: { n: 'one' } }])).rejects.toThrow(
      /invalid payload for noop: payload.n/,
    );
    expect((await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs')).rows[0]!.n).toBe(0);
    expect(nudges()).toHaveLength(0);
    await client.close();
  });

  test('without a bus name nothing is sent; without the Data API settings it says which are missing', async () => {
    const { JOBS_BUS_NAME: _, ...noBus } = env();
    const client = new AwsJobClient({ registry: createTestRegistry(), env: noBus, eventBridge });
    await client.enqueue({ type: 'noop', payload: { n: 1 } });
    expect(await client.wakeWorkers()).toBe(false);
    expect(nudges()).toHaveLength(0);
    await client.close();
    expect(() => new AwsJobClient({ registry: createTestRegistry(), env: {} })).toThrow(
      /needs DATA_API_RESOURCE_ARN, DATA_API_SECRET_ARN, DATA_API_DATABASE/,
    );
  });

  test('a job due at its creation counts as due though this process’s clock runs behind the database’s', async () => {
    // The database's clock (here injected) is 5 s ahead of this process's.
    const dbClock = new ManualClock(new Date(Date.now() + 5_000));
    const tracker = new JobTracker({ db: t.db, registry: createTestRegistry(), clock: dbClock });
    const [dueNow, ahead] = await tracker.enqueueMany([
      { type: 'noop', payload: { n: 1 } },
      { type: 'noop', payload: { n: 2 }, runAt: new Date(dbClock.now().getTime() + 60_000) },
    ]);
    expect(createdJobDueNow([dueNow!], new Date())).toBe(true);
    expect(createdJobDueNow([ahead!], new Date())).toBe(false);
    expect(createdJobDueNow([{ ...dueNow!, created: false }], new Date())).toBe(false);
    // A run time this process already sees as past is due too.
    expect(createdJobDueNow([ahead!], new Date(Date.now() + 120_000))).toBe(true);
  });

  test('a database passed in is used as is and left open for its owner', async () => {
    const client = new AwsJobClient({ registry: createTestRegistry(), db: t.db, busName: 'b', eventBridge });
    await client.enqueue({ type: 'noop', payload: { n: 1 } });
    await client.close();
    expect((await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs')).rows[0]!.n).toBe(1);
    expect(nudges()).toEqual([[expect.objectContaining({ EventBusName: 'b' })]]);
  });
});

describe('AwsJobClient: a lone due job starts without fetch-ready', () => {
  const registry = () =>
    createTestRegistry().register({
      type: 'one-at-a-time',
      description: 'a type with a concurrency limit of 1',
      schema: z.object({ n: z.number().int() }),
      concurrency: 1,
      execute: async () => undefined,
    });
  const sent = () =>
    bus.commandCalls(PutEventsCommand).map((c) => {
      const entry = c.args[0].input.Entries![0]!;
      return { detailType: entry.DetailType, detail: JSON.parse(entry.Detail!) as Record<string, unknown> };
    });
  const row = async (id: string) =>
    (
      await t.db.query<{ status: string; attempts: number; counted: number; leased: boolean }>(
        `SELECT status, attempts, attempts - attempt_offset AS counted, lease_expires_at IS NOT NULL AS leased
         FROM jobs WHERE id = CAST(:id AS uuid)`,
        { id },
      )
    ).rows[0];

  test('the first enqueue of a window claims its job and publishes it to the executor', async () => {
    let now = Date.parse('2026-06-01T00:00:00Z');
    const client = new AwsJobClient({ registry: registry(), env: env(), eventBridge, nowMs: () => now });
    fixture.resetCounts();
    const { job } = await client.enqueue({ type: 'noop', payload: { n: 1 } });
    // The insert and the claim in one statement: no fetch-ready run, no nudge. Every type is limited on
    // AWS (the stack's cap on a type without one), so the process's first claim also makes the slot rows,
    // once.
    expect(fixture.counts.Execute).toBe(1 + 1);
    fixture.resetCounts();
    now += 1_000;
    const next = await client.enqueue({ type: 'noop', payload: { n: 5 } });
    expect(fixture.counts.Execute).toBe(1);
    expect(await row(next.job.id)).toMatchObject({ status: 'running', attempts: 1 });
    expect(sent()).toEqual([
      { detailType: 'job.ready', detail: { jobId: job.id, jobType: 'noop', attempt: 1, payload: { n: 1 } } },
      {
        detailType: 'job.ready',
        detail: { jobId: next.job.id, jobType: 'noop', attempt: 1, payload: { n: 5 } },
      },
    ]);
    // Claimed under a dispatch lease; the attempt is begun (and counted) by its executor, not here.
    expect(await row(job.id)).toMatchObject({ status: 'running', attempts: 1, leased: true });
    // Later in the same window the enqueue nudges fetch-ready instead, as before.
    now += 400;
    const second = await client.enqueue({ type: 'noop', payload: { n: 2 } });
    expect(sent().map((e) => e.detailType)).toEqual(['job.ready', 'job.ready', 'jobs.enqueued']);
    expect(await row(second.job.id)).toMatchObject({ status: 'pending', attempts: 0 });
    // A batch always nudges.
    now += 1_000;
    await client.enqueueMany([
      { type: 'noop', payload: { n: 3 } },
      { type: 'noop', payload: { n: 4 } },
    ]);
    expect(sent().map((e) => e.detailType)).toEqual([
      'job.ready',
      'job.ready',
      'jobs.enqueued',
      'jobs.enqueued',
    ]);
    await client.close();
  });

  test('a type at its concurrency limit is not claimed past it: the job waits and fetch-ready is nudged', async () => {
    let now = Date.parse('2026-06-01T00:00:00Z');
    const client = new AwsJobClient({ registry: registry(), env: env(), eventBridge, nowMs: () => now });
    const first = await client.enqueue({ type: 'one-at-a-time', payload: { n: 1 } });
    expect(await row(first.job.id)).toMatchObject({ status: 'running' });
    now += 5_000;
    const second = await client.enqueue({ type: 'one-at-a-time', payload: { n: 2 } });
    expect(await row(second.job.id)).toMatchObject({ status: 'pending', attempts: 0 });
    expect(sent().map((e) => e.detailType)).toEqual(['job.ready', 'jobs.enqueued']);
    await client.close();
  });

  test('a paused type is not claimed: the job waits and fetch-ready is nudged', async () => {
    const client = new AwsJobClient({ registry: registry(), env: env(), eventBridge });
    await client.tracker.pauseType('noop', { reason: 'provider down', by: 'test' });
    const { job } = await client.enqueue({ type: 'noop', payload: { n: 1 } });
    expect(await row(job.id)).toMatchObject({ status: 'pending', attempts: 0 });
    expect(sent().map((e) => e.detailType)).toEqual(['jobs.enqueued']);
    await client.tracker.resumeType('noop');
    await client.close();
  });

  test('an event EventBridge refuses releases the claim uncounted, and fetch-ready is nudged', async () => {
    bus.on(PutEventsCommand).resolves({
      FailedEntryCount: 1,
      Entries: [{ ErrorCode: 'InternalFailure', ErrorMessage: 'try again' }],
    });
    const errors: unknown[] = [];
    const client = new AwsJobClient({
      registry: registry(),
      env: env(),
      eventBridge,
      onNudgeError: (e) => errors.push(e),
    });
    const { job, created } = await client.enqueue({ type: 'noop', payload: { n: 1 } });
    expect(created).toBe(true);
    expect(await row(job.id)).toMatchObject({ status: 'pending', counted: 0 });
    expect(sent().map((e) => e.detailType)).toEqual(['job.ready', 'jobs.enqueued']);
    // The nudge was refused too: reported, and the enqueue still succeeded.
    expect(errors).toHaveLength(1);
    await client.close();
  });

  test('an enqueue and claim the Data API fails writes nothing and fails as any enqueue', async () => {
    const dataApi = dataApiDriverOver(fixture, t.name);
    let statements = 0;
    // The slot rows are made; the statement after (the insert and its claim) fails.
    const failingAfterSlots: Database = {
      driverName: dataApi.driverName,
      maxRowBytes: dataApi.maxRowBytes,
      maxRequestBytes: dataApi.maxRequestBytes,
      resendsStatements: dataApi.resendsStatements,
      query: (sql, params) =>
        ++statements === 1 ? dataApi.query(sql, params) : Promise.reject(new Error('DatabaseUnavailable')),
      transaction: (work) => dataApi.transaction(work),
      close: () => dataApi.close(),
    };
    const client = new AwsJobClient({
      registry: registry(),
      db: failingAfterSlots,
      busName: 'lana-jobs-bus',
      eventBridge,
    });
    await expect(client.enqueue({ type: 'noop', payload: { n: 1 } })).rejects.toThrow('DatabaseUnavailable');
    expect((await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs')).rows[0]!.n).toBe(0);
    expect(sent()).toEqual([]);
    await dataApi.close();
  });

  test('an enqueue and claim sent again after it committed answers with its job and its claim', async () => {
    // The SDK's default retries, as on AWS: the first send commits, its answer is lost, the SDK resends.
    const dataApi = dataApiDriverOver(fixture, t.name, { sdkRetries: true });
    const client = new AwsJobClient({ registry: registry(), db: dataApi, busName: 'b', eventBridge });
    // The process's first claim makes the slot rows first: lose the answer of the statement after it.
    await client.tracker.enqueueAndClaim({ type: 'noop', payload: { n: 0 } });
    await t.db.query('TRUNCATE jobs, job_execution_records');
    fixture.injectFault({
      error: 'InternalServerErrorException',
      status: 500,
      operation: 'Execute',
      afterRunning: true,
    });
    fixture.resetCounts();
    const { job, created } = await client.enqueue({ type: 'noop', payload: { n: 1 } });
    expect(created).toBe(true);
    // One job, claimed once (attempt 1), and published once.
    expect(
      (await t.db.query<{ n: number }>("SELECT count(*)::int AS n FROM jobs WHERE job_type = 'noop'"))
        .rows[0]!.n,
    ).toBe(1);
    expect(await row(job.id)).toMatchObject({ status: 'running', attempts: 1 });
    expect(sent()).toEqual([
      { detailType: 'job.ready', detail: { jobId: job.id, jobType: 'noop', attempt: 1, payload: { n: 1 } } },
    ]);
    fixture.clearFaults();
    await dataApi.close();
  });
});
