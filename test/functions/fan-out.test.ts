import { Metrics } from '@aws-lambda-powertools/metrics';
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { createObservability } from '../../functions/lib/powertools.js';
import { defaultTypeConcurrency } from '../../functions/lib/runtime.js';
import { createScheduleHandler } from '../../functions/schedule/handler.js';
import {
  fanOutDueJobs,
  type JobPublisher,
  type JobReadyEvent,
  type PublishOutcome,
} from '../../shared/aws/fetch-ready.js';
import { createPowertoolsJobMetrics, METRIC } from '../../shared/aws/powertools-metrics.js';
import { FetchReadyWaker } from '../../shared/aws/waker.js';
import { createJobTypeRegistry } from '../../shared/job-types/index.js';
import { DEFAULT_TYPE_CONCURRENCY } from '../../shared/jobs/registry.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { createTestRegistry, type TestServices } from '../support/test-job-types.js';

let t: TestDatabase;
let tracker: JobTracker<ReturnType<typeof createTestRegistry>['schemas'], TestServices>;
beforeAll(async () => {
  t = await createTestDatabase();
  tracker = new JobTracker({ db: t.db, registry: createTestRegistry() });
});
afterAll(async () => t.drop());
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_execution_records CASCADE');
});

/** A publisher that records each call and answers with `answer` (default: all accepted). */
function fakePublisher(
  answer: (events: readonly JobReadyEvent[], call: number) => PublishOutcome[] = (e) =>
    e.map(() => ({ ok: true })),
) {
  const calls: JobReadyEvent[][] = [];
  const publisher: JobPublisher = {
    maxBatch: 10,
    async publish(events) {
      calls.push([...events]);
      return answer(events, calls.length);
    },
  };
  return { publisher, calls };
}
const noSleep = async () => {};

describe('fan-out core', () => {
  test('claims again while claims come back full, up to maxClaims', async () => {
    await tracker.enqueueMany(Array.from({ length: 12 }, () => ({ type: 'noop' as const, payload: {} })));
    const { publisher, calls } = fakePublisher();
    const result = await fanOutDueJobs(tracker, publisher, { batchSize: 5, maxClaims: 2, sleep: noSleep });
    expect(result).toMatchObject({ claimed: 10, published: 10, released: 0, publishCalls: 2 });
    expect(calls.map((c) => c.length)).toEqual([5, 5]);
    expect(result.queue.depth).toBe(2);
    const again = await fanOutDueJobs(tracker, publisher, { batchSize: 5, maxClaims: 5, sleep: noSleep });
    // A short claim ends the run.
    expect(again).toMatchObject({ claimed: 2, published: 2 });
    expect(again.queue.depth).toBe(0);
  });

  test('an entry that keeps failing is released after the attempt limit; the rest stays published', async () => {
    const { job: stuck } = await tracker.enqueue({ type: 'noop', payload: { n: 1 } });
    await tracker.enqueueMany(Array.from({ length: 3 }, () => ({ type: 'noop' as const, payload: {} })));
    const { publisher, calls } = fakePublisher((events) =>
      events.map((e) =>
        e.jobId === stuck.id ? { ok: false, error: 'InternalFailure: boom' } : { ok: true },
      ),
    );
    const delays: number[] = [];
    const result = await fanOutDueJobs(tracker, publisher, {
      maxPublishAttempts: 3,
      sleep: async (ms) => {
        delays.push(ms);
      },
    });
    expect(result).toMatchObject({ claimed: 4, published: 3, released: 1, publishCalls: 3 });
    expect(result.unpublished).toEqual([
      { jobId: stuck.id, jobType: 'noop', attempt: 1, error: 'InternalFailure: boom' },
    ]);
    expect(calls.map((c) => c.length)).toEqual([4, 1, 1]);
    expect(delays).toEqual([100, 200]);
    // Released: due again at once, and the lost claim does not count as an attempt.
    const job = await tracker.getJob(stuck.id);
    expect(job).toMatchObject({ status: 'pending' });
    const [reclaimed] = await tracker.fetchReady(10);
    expect(reclaimed).toMatchObject({ id: stuck.id });
  });

  test('a publisher answering fewer outcomes than entries gets the rest re-sent', async () => {
    await tracker.enqueueMany(Array.from({ length: 3 }, () => ({ type: 'noop' as const, payload: {} })));
    const { publisher, calls } = fakePublisher((events, call) =>
      call === 1 ? [{ ok: true }] : events.map(() => ({ ok: true })),
    );
    const result = await fanOutDueJobs(tracker, publisher, { sleep: noSleep });
    expect(result).toMatchObject({ claimed: 3, published: 3, released: 0 });
    expect(calls.map((c) => c.length)).toEqual([3, 2]);
  });

  test('expired leases are rescued before claiming', async () => {
    const { job } = await tracker.enqueue({ type: 'noop', payload: {} });
    // Its executor began it, then vanished.
    await tracker.fetchReady(1, { startNow: true });
    await t.db.query("UPDATE jobs SET lease_expires_at = now() - interval '1 second'");
    const { publisher } = fakePublisher();
    const result = await fanOutDueJobs(tracker, publisher, { sleep: noSleep });
    expect(result.rescued).toEqual([expect.objectContaining({ id: job.id, status: 'retrying' })]);
    // Rescued into the retry rule's backoff: not due yet.
    expect(result.claimed).toBe(0);
  });
});

describe('CloudWatch metrics adapter', () => {
  test('emits the alarm metrics with exactly the service dimension', () => {
    const metrics = new Metrics({ namespace: 'LanaJobs', serviceName: 'lana-jobs' });
    const port = createPowertoolsJobMetrics(metrics);
    port.attemptFinished('sync', 'completed', 12.5);
    port.attemptFinished('sync', 'retrying', 3);
    port.queueState({ depth: 7, oldestReadyAgeSeconds: 42 });
    const emf = metrics.serializeMetrics() as unknown as Record<string, unknown> & {
      _aws: {
        CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string }[] }[];
      };
    };
    const [directive] = emf._aws.CloudWatchMetrics;
    expect(directive!.Namespace).toBe('LanaJobs');
    expect(directive!.Dimensions).toEqual([['service']]);
    expect(emf.service).toBe('lana-jobs');
    expect(directive!.Metrics.map((m) => m.Name).sort()).toEqual(
      [
        METRIC.succeeded,
        METRIC.retried,
        METRIC.failed,
        METRIC.executionTime,
        METRIC.queueDepth,
        METRIC.oldestReadyAge,
      ].sort(),
    );
    // A retried attempt is a failed attempt for the failure rate.
    expect(emf[METRIC.failed]).toBe(1);
    expect(emf[METRIC.queueDepth]).toBe(7);
  });

  test('claims handed back undelivered go to their own metric, for the UndeliveredClaims alarm', () => {
    const metrics = new Metrics({ namespace: 'LanaJobs', serviceName: 'lana-jobs' });
    createPowertoolsJobMetrics(metrics).claimsHandedBack?.('notification', 4);
    const emf = metrics.serializeMetrics() as unknown as Record<string, unknown>;
    expect(emf[METRIC.handedBack]).toBe(4);
    expect(emf.handedBackJobType).toBe('notification');
  });
});

describe("the AWS runtime's cap on a type without a limit", () => {
  test('defaults to 50, is read from the stack setting, and refuses a bad value', () => {
    expect(defaultTypeConcurrency({})).toBe(DEFAULT_TYPE_CONCURRENCY);
    expect(defaultTypeConcurrency({ LANA_DEFAULT_TYPE_CONCURRENCY: '7' })).toBe(7);
    expect(() => defaultTypeConcurrency({ LANA_DEFAULT_TYPE_CONCURRENCY: '0' })).toThrow(/from 1 to 10000/);
  });

  test('a fan-out claims at most the cap of a type that declares no limit', async () => {
    const capped = new JobTracker({ db: t.db, registry: tracker.registry, defaultConcurrency: 3 });
    await capped.enqueueMany(Array.from({ length: 8 }, () => ({ type: 'noop' as const, payload: {} })));
    const { publisher } = fakePublisher();
    const result = await fanOutDueJobs(capped, publisher, { sleep: noSleep });
    expect(result.published).toBe(3);
  });
});

describe('schedule nudge', () => {
  const eventBridge = mockClient(EventBridgeClient);
  afterAll(() => eventBridge.restore());

  test('a newly enqueued tick wakes fetch-ready once; a duplicate tick does not', async () => {
    eventBridge.reset();
    eventBridge.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: '1' }] });
    const registry = createJobTypeRegistry();
    const runtime = { db: t.db, registry, tracker: new JobTracker({ db: t.db, registry }) };
    const handler = createScheduleHandler({
      runtime,
      o: createObservability('test', { silent: true }),
      waker: FetchReadyWaker.forBus({
        busName: 'jobs',
        client: new EventBridgeClient({ region: 'us-east-1' }),
      }),
    });
    const tick = { schedule: 'portfolio-valuation', time: '2026-11-29T10:05:00Z' };
    expect((await handler(tick)).created).toBe(true);
    expect((await handler(tick)).created).toBe(false);
    expect(eventBridge).toHaveReceivedCommandTimes(PutEventsCommand, 1);
    expect(eventBridge).toHaveReceivedCommandWith(PutEventsCommand, {
      Entries: [
        {
          EventBusName: 'jobs',
          Source: 'lana.jobs',
          DetailType: 'jobs.enqueued',
          Detail: expect.stringContaining('"reason":"enqueued"'),
        },
      ],
    });
  });

  test('a failed nudge does not fail the tick: the job is committed and found within a minute', async () => {
    eventBridge.reset();
    eventBridge.on(PutEventsCommand).rejects(new Error('EventBridge unavailable'));
    const registry = createJobTypeRegistry();
    const runtime = { db: t.db, registry, tracker: new JobTracker({ db: t.db, registry }) };
    const handler = createScheduleHandler({
      runtime,
      o: createObservability('test', { silent: true }),
      waker: FetchReadyWaker.forBus({
        busName: 'jobs',
        client: new EventBridgeClient({ region: 'us-east-1' }),
      }),
    });
    const result = await handler({ schedule: 'job-retention-hourly', time: '2026-11-29T10:17:00Z' });
    expect(result.created).toBe(true);
    expect(await runtime.tracker.getJob(result.jobId!)).toMatchObject({ jobType: 'maintenance' });
  });
});
