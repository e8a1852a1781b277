import { randomUUID } from 'node:crypto';
import { EventBridgeClient, PutEventsCommand, type PutEventsCommandInput } from '@aws-sdk/client-eventbridge';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, beforeEach, describe, expect, test, vi } from 'vitest';
import { createExecutorHandler } from '../../functions/executor/handler.js';
import { createFetchReadyHandler } from '../../functions/fetch-ready/handler.js';
import { createObservability } from '../../functions/lib/powertools.js';
import {
  chainFromEnv,
  dispatcherFor,
  type JobRuntime,
  publisherFromEnv,
  runtimeFromEnv,
  wakerFromEnv,
} from '../../functions/lib/runtime.js';
import { createMigrateHandler } from '../../functions/migrate/handler.js';
import { createScheduleHandler } from '../../functions/schedule/handler.js';
import { createEventBridgePublisher } from '../../shared/aws/eventbridge-publisher.js';
import { FollowUpNudge } from '../../shared/aws/follow-ups.js';
import { FetchReadyWaker, JOBS_ENQUEUED_DETAIL_TYPE } from '../../shared/aws/waker.js';
import { loadMigrations } from '../../shared/db/migrate.js';
import { createJobServices } from '../../shared/domain/index.js';
import { createJobTypeRegistry } from '../../shared/job-types/index.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { fixedPrice, insertFacility, recordingNotifier } from '../domain/support.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

let t: TestDatabase;
let runtime: JobRuntime;
const o = createObservability('test', { silent: true });
const eventBridge = mockClient(EventBridgeClient);
const publisher = () =>
  createEventBridgePublisher({
    busName: 'lana-jobs',
    client: new EventBridgeClient({ region: 'us-east-1' }),
  });

beforeAll(async () => {
  t = await createTestDatabase();
  const registry = createJobTypeRegistry();
  runtime = { db: t.db, registry, tracker: new JobTracker({ db: t.db, registry }) };
});
afterAll(async () => {
  eventBridge.restore();
  await t.drop();
});
beforeEach(async () => {
  eventBridge.reset();
  await t.db.query('TRUNCATE jobs, job_execution_records, interest_accruals, credit_facilities CASCADE');
});

const counts = async () =>
  Object.fromEntries(
    (
      await t.db.query<{ status: string; n: number }>(
        'SELECT status, count(*)::int AS n FROM jobs GROUP BY status',
      )
    ).rows.map((r) => [r.status, r.n]),
  );

function executorFor(jobType: string) {
  const services = createJobServices({
    db: t.db,
    tracker: runtime.tracker,
    notifier: recordingNotifier().notifier,
    priceSource: fixedPrice(10_000_000n),
  });
  return createExecutorHandler({ runtime, dispatcher: dispatcherFor(runtime, services), jobType, o });
}

function eventFor(detail: { jobId: string; jobType: string; attempt: number; payload: unknown }) {
  return {
    version: '0',
    id: 'e1',
    source: 'lana.jobs',
    'detail-type': 'job.ready',
    account: '123456789012',
    time: '2026-11-28T00:00:00Z',
    region: 'us-east-1',
    resources: [],
    detail,
  };
}

describe('fetch-ready', () => {
  test('publishes one event per claimed job in batches of 10, resending only failed entries', async () => {
    // 23 notifications due; the type runs at most 20 at once, so the claim (of up to 25) takes 20 (its
    // rate, 14 a second, raised as a stack's setting would, so that the concurrency limit is the bound).
    const tracker = new JobTracker({
      db: t.db,
      registry: runtime.registry,
      rateLimitOverrides: { notification: { limit: 100, perSeconds: 1 } },
    });
    await tracker.enqueueMany(
      Array.from({ length: 23 }, (_, i) => ({
        type: 'notification' as const,
        payload: {
          kind: 'payment-reminder' as const,
          facilityId: randomUUID(),
          dueDate: `2026-01-${String(i + 1).padStart(2, '0')}`,
        },
      })),
    );
    let call = 0;
    eventBridge.on(PutEventsCommand).callsFake((input: PutEventsCommandInput) => {
      call++;
      // The second call fails two of its entries; they must come back alone in the next call.
      return {
        FailedEntryCount: call === 2 ? 2 : 0,
        Entries: input.Entries!.map((_, i) =>
          call === 2 && (i === 3 || i === 7)
            ? { ErrorCode: 'ThrottlingException', ErrorMessage: 'slow down' }
            : { EventId: `ev-${call}-${i}` },
        ),
      };
    });
    const result = await createFetchReadyHandler({
      runtime: { ...runtime, tracker },
      publisher: publisher(),
      o,
      batchSize: 25,
    })({
      source: 'aws.events',
    });
    expect(result).toMatchObject({ claimed: 20, published: 20, released: 0, publishCalls: 3 });
    const sizes = eventBridge.commandCalls(PutEventsCommand).map((c) => c.args[0].input.Entries!.length);
    expect(sizes).toEqual([10, 10, 2]);
    const resent = eventBridge
      .commandCalls(PutEventsCommand)[2]!
      .args[0].input.Entries!.map((e) => JSON.parse(e.Detail!).jobId);
    const second = eventBridge
      .commandCalls(PutEventsCommand)[1]!
      .args[0].input.Entries!.map((e) => JSON.parse(e.Detail!).jobId);
    expect(resent).toEqual([second[3], second[7]]);
    const detail = JSON.parse(
      eventBridge.commandCalls(PutEventsCommand)[0]!.args[0].input.Entries![0]!.Detail!,
    );
    expect(detail).toMatchObject({
      jobType: 'notification',
      attempt: 1,
      payload: { kind: 'payment-reminder', dueDate: expect.any(String) },
    });
    expect(eventBridge.commandCalls(PutEventsCommand)[0]!.args[0].input.Entries![0]).toMatchObject({
      EventBusName: 'lana-jobs',
      Source: 'lana.jobs',
      DetailType: 'job.ready',
    });
    expect(await counts()).toEqual({ running: 20, pending: 3 });
  });

  test('jobs whose events cannot be published are released, due again at once', async () => {
    await runtime.tracker.enqueueMany(
      Array.from({ length: 3 }, () => ({
        type: 'approval-processing' as const,
        payload: { processId: randomUUID() },
      })),
    );
    eventBridge.on(PutEventsCommand).rejects(new Error('EventBridge unavailable'));
    const result = await createFetchReadyHandler({ runtime, publisher: publisher(), o })({});
    expect(result).toMatchObject({ claimed: 3, published: 0, released: 3 });
    expect(await counts()).toEqual({ pending: 3 });
    expect(result.queue.depth).toBe(3);
  });

  test('overlapping runs never publish the same job twice, nor more than the type runs at once', async () => {
    // approval-processing runs at most 10 at once: two runs together claim 10 of the 40.
    await runtime.tracker.enqueueMany(
      Array.from({ length: 40 }, () => ({
        type: 'approval-processing' as const,
        payload: { processId: randomUUID() },
      })),
    );
    eventBridge.on(PutEventsCommand).callsFake((input: PutEventsCommandInput) => ({
      FailedEntryCount: 0,
      Entries: input.Entries!.map((_, i) => ({ EventId: `ev-${i}` })),
    }));
    const run = () => createFetchReadyHandler({ runtime, publisher: publisher(), o, batchSize: 25 })({});
    const [a, b] = await Promise.all([run(), run()]);
    expect(a.claimed + b.claimed).toBe(10);
    const ids = eventBridge
      .commandCalls(PutEventsCommand)
      .flatMap((c) => c.args[0].input.Entries!.map((e) => JSON.parse(e.Detail!).jobId));
    expect(new Set(ids).size).toBe(10);
    expect(ids).toHaveLength(10);
  });
});

describe('executor', () => {
  test('runs the attempt, records it, and ignores a duplicate delivery', async () => {
    // Opened on the day accrued, so catch-up has exactly that one day to accrue.
    await insertFacility(t.db, { principalCents: 36_500n, rate: '0.05', createdAt: '2026-06-01T00:00:00Z' });
    const { job } = await runtime.tracker.enqueue({
      type: 'interest-accrual',
      payload: { date: '2026-06-01' },
    });
    const [claimed] = await runtime.tracker.fetchReady(1);
    const event = eventFor({
      jobId: job.id,
      jobType: 'interest-accrual',
      attempt: claimed!.attempts,
      payload: claimed!.payload,
    });
    const handler = executorFor('interest-accrual');
    expect(await handler(event)).toEqual({ outcome: 'completed' });
    expect(await handler(event)).toEqual({ outcome: 'duplicate' });
    expect(await runtime.tracker.getJob(job.id)).toMatchObject({ status: 'completed', attempts: 1 });
    const accruals = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM interest_accruals');
    expect(accruals.rows[0]!.n).toBe(1);
  });

  test('a stale attempt (its lease expired, the job re-claimed) does not run or overwrite', async () => {
    const { job } = await runtime.tracker.enqueue({
      type: 'interest-accrual',
      payload: { date: '2026-06-01' },
    });
    await runtime.tracker.fetchReady(1);
    // The first event never arrived; the rescuer retried and the job was claimed again as attempt 2.
    await t.db.query("UPDATE jobs SET lease_expires_at = now() - interval '1 second'");
    await runtime.tracker.rescueExpiredLeases();
    await t.db.query('UPDATE jobs SET scheduled_at = now()');
    await runtime.tracker.fetchReady(1);
    const handler = executorFor('interest-accrual');
    const stale = eventFor({ jobId: job.id, jobType: 'interest-accrual', attempt: 1, payload: {} });
    expect(await handler(stale)).toEqual({ outcome: 'duplicate' });
    expect(await runtime.tracker.getJob(job.id)).toMatchObject({
      status: 'running',
      attempts: 2,
      startedAt: null,
    });
    expect(
      await handler(eventFor({ jobId: job.id, jobType: 'interest-accrual', attempt: 2, payload: {} })),
    ).toEqual({ outcome: 'completed' });
  });

  test('a failing executor is recorded as a retry by the table (Lambda does not retry)', async () => {
    const { job } = await runtime.tracker.enqueue({
      type: 'approval-processing',
      payload: { processId: '00000000-0000-4000-8000-000000000009' },
    });
    const [claimed] = await runtime.tracker.fetchReady(1);
    const result = await executorFor('approval-processing')(
      eventFor({
        jobId: job.id,
        jobType: 'approval-processing',
        attempt: claimed!.attempts,
        payload: claimed!.payload,
      }),
    );
    // An unknown approval process can never succeed: failed at once, with the reason.
    expect(result).toEqual({ outcome: 'failed' });
    expect((await runtime.tracker.getJob(job.id))!.lastError).toMatch(/no approval process/);
  });

  test.each([
    ['a missing detail', { source: 'lana.jobs', 'detail-type': 'job.ready' }, /detail/],
    [
      'a non-UUID job id',
      {
        source: 'lana.jobs',
        'detail-type': 'job.ready',
        detail: { jobId: "1' OR 1=1", jobType: 'sync', attempt: 1 },
      },
      /detail\.jobId/,
    ],
    [
      'a foreign source',
      {
        source: 'aws.events',
        'detail-type': 'job.ready',
        detail: { jobId: '00000000-0000-4000-8000-000000000009', jobType: 'sync', attempt: 1 },
      },
      /source/,
    ],
    [
      'attempt zero',
      {
        source: 'lana.jobs',
        'detail-type': 'job.ready',
        detail: { jobId: '00000000-0000-4000-8000-000000000009', jobType: 'sync', attempt: 0 },
      },
      /detail\.attempt/,
    ],
    [
      'another job type',
      eventFor({
        jobId: '00000000-0000-4000-8000-000000000009',
        jobType: 'notification',
        attempt: 1,
        payload: {},
      }),
      /runs sync jobs, not notification/,
    ],
  ])('rejects %s with a clear error and writes nothing', async (_name, event, message) => {
    const { job } = await runtime.tracker.enqueue({ type: 'sync', payload: {} });
    await runtime.tracker.fetchReady(1);
    const before = await runtime.tracker.getJob(job.id);
    const logged = vi.spyOn(o.logger, 'error');
    try {
      await expect(executorFor('sync')(event)).rejects.toThrow(message);
      // One error log line says what was wrong and that nothing was written.
      expect(logged).toHaveBeenCalledTimes(1);
      expect(logged.mock.calls[0]![0]).toMatch(/^rejected .*; nothing written$/);
    } finally {
      logged.mockRestore();
    }
    expect(await runtime.tracker.getJob(job.id)).toEqual(before);
  });
});

describe('executor with follow-ups', () => {
  /** The payment-reminder sweep's executor, wired as the Lambda wires it: its services enqueue through a nudge. */
  const remindersExecutor = () => {
    const followUps = new FollowUpNudge(
      runtime.tracker,
      FetchReadyWaker.forBus({
        busName: 'lana-jobs',
        client: new EventBridgeClient({ region: 'us-east-1' }),
      }),
    );
    const services = createJobServices({
      db: t.db,
      tracker: followUps.tracker,
      notifier: recordingNotifier().notifier,
      priceSource: fixedPrice(10_000_000n),
    });
    return createExecutorHandler({
      runtime,
      dispatcher: dispatcherFor(runtime, services),
      jobType: 'payment-reminders',
      o,
      followUps,
    });
  };
  const runSweep = async (handler: ReturnType<typeof remindersExecutor>, date: string) => {
    const { job } = await runtime.tracker.enqueue({ type: 'payment-reminders', payload: { date } });
    const [claimed] = await runtime.tracker.fetchReady(1);
    return handler(
      eventFor({
        jobId: job.id,
        jobType: 'payment-reminders',
        attempt: claimed!.attempts,
        payload: claimed!.payload,
      }),
    );
  };
  const nudges = () =>
    eventBridge
      .commandCalls(PutEventsCommand)
      .flatMap((c) => (c.args[0].input as PutEventsCommandInput).Entries ?? [])
      .filter((e) => e.DetailType === JOBS_ENQUEUED_DETAIL_TYPE);

  test('a run that enqueued due follow-ups wakes fetch-ready once, after the run; one that enqueued none does not', async () => {
    eventBridge.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: 'x' }] });
    await insertFacility(t.db, { principalCents: 100n, rate: '0.1', nextPaymentDue: '2026-06-04' });
    await insertFacility(t.db, {
      principalCents: 100n,
      rate: '0.1',
      email: 'b@example.com',
      nextPaymentDue: '2026-06-04',
    });
    const handler = remindersExecutor();
    expect(await runSweep(handler, '2026-06-01')).toEqual({ outcome: 'completed' });
    expect(await counts()).toEqual({ completed: 1, pending: 2 });
    expect(nudges()).toEqual([
      {
        EventBusName: 'lana-jobs',
        Source: 'lana.jobs',
        DetailType: JOBS_ENQUEUED_DETAIL_TYPE,
        Detail: expect.stringContaining('"reason":"enqueued"'),
      },
    ]);
    // No payment due three days after this day: nothing enqueued, no nudge.
    await t.db.query('TRUNCATE jobs, job_execution_records');
    expect(await runSweep(handler, '2026-07-01')).toEqual({ outcome: 'completed' });
    expect(nudges()).toHaveLength(1);
  });

  test('a nudge that fails is logged; the run stays recorded and the follow-ups wait for the next minute', async () => {
    eventBridge.on(PutEventsCommand).rejects(new Error('throttled'));
    await insertFacility(t.db, { principalCents: 100n, rate: '0.1', nextPaymentDue: '2026-06-04' });
    expect(await runSweep(remindersExecutor(), '2026-06-01')).toEqual({ outcome: 'completed' });
    expect(await counts()).toEqual({ completed: 1, pending: 1 });
    expect(eventBridge.commandCalls(PutEventsCommand)).toHaveLength(1);
  });
});

describe('schedule', () => {
  test('a duplicate delivery of the midnight tick enqueues interest accrual once', async () => {
    const handler = createScheduleHandler({ runtime, o });
    const tick = { schedule: 'interest-accrual-daily', time: '2026-11-29T00:00:00Z' };
    const first = await handler(tick);
    const again = await handler({ ...tick, time: '2026-11-29T00:00:37Z' }); // same tick, late within the minute
    expect(first.created).toBe(true);
    expect(again).toEqual({ jobId: first.jobId, created: false });
    expect(await runtime.tracker.getJob(first.jobId!)).toMatchObject({
      jobType: 'interest-accrual',
      payload: { date: '2026-11-28' },
    });
  });

  test('the first payment-reminders tick after an outage enqueues the missed days, oldest first, once', async () => {
    await t.db.query('TRUNCATE schedule_ticks');
    const nudge = vi.fn(async () => undefined);
    const handler = createScheduleHandler({ runtime, o, waker: new FetchReadyWaker(nudge) });
    const schedule = 'payment-reminders-daily';
    expect(await handler({ schedule, time: '2026-11-25T08:00:00Z' })).toMatchObject({ created: true });
    // Nothing delivered on the 26th to the 28th (the function failing past EventBridge's retries).
    const after = await handler({ schedule, time: '2026-11-29T08:00:00Z' });
    expect(after).toMatchObject({ created: true, backfilled: 2 });
    const dates = await t.db.query<{ date: string }>(
      "SELECT payload->>'date' AS date FROM jobs WHERE job_type = 'payment-reminders' ORDER BY id",
    );
    // The window is three days back from the tick: the 27th and 28th; the 26th is past it.
    expect(dates.rows.map((r) => r.date)).toEqual(['2026-11-25', '2026-11-27', '2026-11-28', '2026-11-29']);
    // A late duplicate delivery of the tick enqueues nothing more.
    expect(await handler({ schedule, time: '2026-11-29T08:00:41Z' })).toEqual({
      jobId: after.jobId,
      created: false,
    });
    expect(await counts()).toEqual({ pending: 4 });
    expect(nudge).toHaveBeenCalledTimes(2);
  });

  test('a malformed or unknown schedule event writes nothing', async () => {
    const handler = createScheduleHandler({ runtime, o });
    await expect(handler({ schedule: 'interest-accrual-daily', time: 'yesterday' })).rejects.toThrow(
      /malformed/,
    );
    await expect(handler({ schedule: 'nope', time: '2026-11-29T00:00:00Z' })).rejects.toThrow(
      /unknown schedule/,
    );
    expect(await counts()).toEqual({});
  });
});

describe('migrate', () => {
  test('applies the migrations on create and is a no-op on update', async () => {
    const fresh = await createTestDatabase({ migrate: false });
    try {
      const handler = createMigrateHandler({ db: fresh.db, o });
      const all = (await loadMigrations()).map((m) => m.name);
      expect(all).toContain('0001_jobs.sql');
      expect(await handler({ RequestType: 'Create' })).toMatchObject({
        Data: { Applied: all.join(',') },
      });
      expect(
        await handler({ RequestType: 'Update', PhysicalResourceId: 'lana-jobs-migrations' }),
      ).toMatchObject({ Data: { Applied: '' } });
      expect(await handler({ RequestType: 'Delete', PhysicalResourceId: 'lana-jobs-migrations' })).toEqual({
        PhysicalResourceId: 'lana-jobs-migrations',
      });
    } finally {
      await fresh.drop();
    }
  });
});

describe('the runtime built from the environment', () => {
  test('builds one EventBridge client: the publisher, the waker and the chain all send through it', async () => {
    const env = {
      DATA_API_RESOURCE_ARN: 'arn:aws:rds:us-east-1:123456789012:cluster:lana-jobs',
      DATA_API_SECRET_ARN: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:lana-jobs',
      DATA_API_DATABASE: 'lana',
      JOBS_BUS_NAME: 'lana-jobs',
    };
    const built = runtimeFromEnv(o, env);
    const other = runtimeFromEnv(o, env);
    expect(built.eventBridge).toBeInstanceOf(EventBridgeClient);
    // Each execution environment's runtime has its own, traced with its own function's tracer.
    expect(other.eventBridge).not.toBe(built.eventBridge);
    eventBridge.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: '1' }] });
    await publisherFromEnv(built, env).publish([
      { jobId: randomUUID(), jobType: 'sync', attempt: 1, payload: {} },
    ]);
    expect(await wakerFromEnv(built, () => {}, env).wake()).toBe(true);
    await chainFromEnv(built, env)();
    const calls = eventBridge.commandCalls(PutEventsCommand);
    expect(calls.map((c) => c.args[0].input.Entries?.[0]?.DetailType)).toEqual([
      'job.ready',
      'jobs.enqueued',
      'jobs.enqueued',
    ]);
    for (const call of calls) expect(call.thisValue).toBe(built.eventBridge);
    await built.db.close();
    await other.db.close();
  });
});
