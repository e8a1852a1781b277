import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import type { Context } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { z } from 'zod';
import { createExecutorHandler } from '../../functions/executor/handler.js';
import { createFetchReadyHandler, lingerUntil } from '../../functions/fetch-ready/handler.js';
import { createObservability } from '../../functions/lib/powertools.js';
import type { JobRuntime, LendingDispatcher } from '../../functions/lib/runtime.js';
import { AwsExecutor } from '../../shared/aws/executor.js';
import { fanOutDueJobs, type JobPublisher, type JobReadyEvent } from '../../shared/aws/fetch-ready.js';
import { createEnqueuedNudge, JOBS_ENQUEUED_DETAIL_TYPE } from '../../shared/aws/waker.js';
import type { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import type { Database } from '../../shared/db/port.js';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import {
  DISPATCH_LEASE_SECONDS,
  type JobTypeMap,
  JobTypeRegistry,
  LEASE_GRACE_SECONDS,
} from '../../shared/jobs/registry.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { type DataApiFixture, dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * Flow control on the AWS path: per-type concurrency limits kept by the claim across concurrent claimers,
 * a short dispatch lease that the executor's start renews (and a start after it expired refused), claims
 * no executor began handed back uncounted, fetch-ready draining at capacity and chaining, coalesced
 * nudges, and executors taking their type's next job.
 */
interface Services {
  runs: { id: string; attempt: number }[];
}
function limitedRegistry() {
  return new JobTypeRegistry<Record<never, never>, Services>()
    .register({
      type: 'capped',
      description: 'at most 3 at once',
      schema: z.object({ n: z.number().int().optional() }),
      concurrency: 3,
      timeoutSeconds: 60,
      execute: async (_payload, ctx) => {
        ctx.services.runs.push({ id: ctx.job.id, attempt: ctx.attempt });
        return undefined;
      },
    })
    .register({
      type: 'free',
      description: 'no limit',
      schema: z.object({ n: z.number().int().optional() }),
      execute: async (_payload, ctx) => {
        ctx.services.runs.push({ id: ctx.job.id, attempt: ctx.attempt });
        return undefined;
      },
    });
}
type Registry = ReturnType<typeof limitedRegistry>;

let t: TestDatabase;
let fixture: DataApiFixture;
let dataApi: DataApiDatabase;
let clock: ManualClock;
const trackerOver = (db: Database) => new JobTracker({ db, registry: limitedRegistry(), clock });

beforeAll(async () => {
  t = await createTestDatabase({ poolSize: 12 });
  fixture = await startDataApiFixture(t.url);
  dataApi = dataApiDriverOver(fixture, t.name);
});
afterAll(async () => {
  await dataApi?.close();
  await fixture?.close();
  await t?.drop();
});
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_execution_records CASCADE');
  clock = new ManualClock('2026-06-01T00:00:00Z');
});

async function enqueue(
  tracker: JobTracker<Registry['schemas'], Services>,
  type: 'capped' | 'free',
  n: number,
) {
  await tracker.enqueueMany(Array.from({ length: n }, (_, i) => ({ type, payload: { n: i } })));
}

async function runningCount(type: string): Promise<number> {
  const r = await t.db.query<{ n: number }>(
    "SELECT count(*)::integer AS n FROM jobs WHERE job_type = :type AND status = 'running'",
    { type },
  );
  return r.rows[0]!.n;
}

test('a concurrency limit is a whole number from 1 to 10,000', () => {
  for (const concurrency of [0, -1, 1.5, 10_001]) {
    expect(() =>
      new JobTypeRegistry().register({
        type: 'bad',
        description: 'x',
        schema: z.object({}),
        concurrency,
        execute: async () => undefined,
      }),
    ).toThrow(/concurrency must be an integer from 1 to 10000/);
  }
});

describe.each([
  ['node-postgres', () => t.db],
  ['Data API', () => dataApi],
])('per-type limits in the claim (%s)', (_name, db) => {
  test('a claim takes at most the free slots of a limited type, and all it can of the others', async () => {
    const tracker = trackerOver(db());
    await enqueue(tracker, 'capped', 10);
    await enqueue(tracker, 'free', 5);
    const first = await tracker.fetchReady(30);
    expect(first.filter((j) => j.jobType === 'capped')).toHaveLength(3);
    expect(first.filter((j) => j.jobType === 'free')).toHaveLength(5);
    expect(await tracker.fetchReady(30)).toEqual([]);
    // One finishes: one slot frees.
    const done = first.find((j) => j.jobType === 'capped')!;
    await tracker.startAttempt(done.id, done.attempts);
    expect(await tracker.markCompleted(done.id, done.attempts)).toBe(true);
    const next = await tracker.fetchReady(30);
    expect(next.map((j) => j.jobType)).toEqual(['capped']);
  });

  test('a claimed attempt whose lease expired no longer takes a slot', async () => {
    const tracker = trackerOver(db());
    await enqueue(tracker, 'capped', 5);
    expect(await tracker.fetchReady(10)).toHaveLength(3);
    clock.advance((DISPATCH_LEASE_SECONDS + 1) * 1000);
    expect(await tracker.fetchReady(10)).toHaveLength(2);
  });
});

test('concurrent claimers never hold more than the limit between them', async () => {
  const tracker = trackerOver(t.db);
  await enqueue(tracker, 'capped', 200);
  // Twelve claimers at once, on twelve connections, several rounds.
  for (let round = 0; round < 5; round++) {
    const claims = await Promise.all(Array.from({ length: 12 }, () => tracker.fetchReady(2)));
    const claimed = claims.flat();
    expect(claimed.length).toBeLessThanOrEqual(3);
    expect(await runningCount('capped')).toBeLessThanOrEqual(3);
    for (const j of claimed) {
      await tracker.startAttempt(j.id, j.attempts);
      await tracker.markCompleted(j.id, j.attempts);
    }
  }
  // Local workers' claims (begun at once) share the same limit.
  const workerClaims = await Promise.all(Array.from({ length: 6 }, () => tracker.claimForWorker(5)));
  expect(workerClaims.flatMap((c) => c.jobs)).toHaveLength(3);
  // A short claim that left due jobs behind asks again soon, not at the next due time.
  const capped = await tracker.claimForWorker(5);
  expect(capped.jobs).toEqual([]);
  expect(capped.nextDueAt!.getTime() - clock.now().getTime()).toBeLessThanOrEqual(1000);
});

describe.each([
  ['node-postgres', () => t.db],
  ['Data API', () => dataApi],
])('leases that cover the run (%s)', (_name, db) => {
  test('a claim holds the dispatch lease; the start renews it to the run lease', async () => {
    const tracker = trackerOver(db());
    await enqueue(tracker, 'capped', 1);
    const [claimed] = await tracker.fetchReady(1);
    expect(claimed!.leaseExpiresAt!.getTime() - clock.now().getTime()).toBe(DISPATCH_LEASE_SECONDS * 1000);
    clock.advance(30_000);
    const started = await tracker.startAttempt(claimed!.id, claimed!.attempts);
    expect(started!.leaseExpiresAt!.getTime() - clock.now().getTime()).toBe(
      (60 + LEASE_GRACE_SECONDS) * 1000,
    );
  });

  test('a start after the dispatch lease expired is refused, and nothing runs', async () => {
    const tracker = trackerOver(db());
    const services: Services = { runs: [] };
    const dispatcher = new JobDispatcher(tracker.registry, services);
    await enqueue(tracker, 'capped', 1);
    const [claimed] = await tracker.fetchReady(1);
    clock.advance((DISPATCH_LEASE_SECONDS + 5) * 1000);
    const outcome = await executorFor(tracker, dispatcher).run({
      jobId: claimed!.id,
      attempt: claimed!.attempts,
    });
    expect(outcome).toEqual({ outcome: 'duplicate', nextJobsRun: 0 });
    expect(services.runs).toEqual([]);
  });

  test('an undelivered claim is handed back without counting an attempt', async () => {
    const tracker = trackerOver(db());
    const services: Services = { runs: [] };
    const dispatcher = new JobDispatcher(tracker.registry, services);
    const { job } = await tracker.enqueue({ type: 'capped', payload: {}, maxAttempts: 1 });
    // Three claims in a row whose events never arrive: a job with one attempt is never failed for them.
    for (let i = 1; i <= 3; i++) {
      const [claimed] = await tracker.fetchReady(1);
      expect(claimed!.attempts).toBe(i);
      clock.advance((DISPATCH_LEASE_SECONDS + 1) * 1000);
      const rescued = await tracker.rescueExpiredLeases();
      expect(rescued).toEqual([
        expect.objectContaining({ id: job.id, undelivered: true, status: 'pending' }),
      ]);
      const back = await tracker.getJob(job.id);
      expect(back!.status).toBe('pending');
      expect(back!.scheduledAt.getTime()).toBe(clock.now().getTime());
    }
    const [last] = await tracker.fetchReady(1);
    const outcome = await executorFor(tracker, dispatcher).run({ jobId: last!.id, attempt: last!.attempts });
    expect(outcome).toMatchObject({ outcome: 'completed' });
    expect(services.runs).toHaveLength(1);
    const history = await tracker.getExecutions(job.id);
    expect(history.map((e) => e.outcome)).toEqual(['undelivered', 'undelivered', 'undelivered', 'completed']);
  });

  test('a run that began and then vanished counts as an attempt', async () => {
    const tracker = trackerOver(db());
    const { job } = await tracker.enqueue({ type: 'capped', payload: {}, maxAttempts: 2 });
    const [claimed] = await tracker.fetchReady(1);
    await tracker.startAttempt(claimed!.id, claimed!.attempts);
    clock.advance((60 + LEASE_GRACE_SECONDS + 1) * 1000);
    const [rescued] = await tracker.rescueExpiredLeases();
    expect(rescued).toMatchObject({ id: job.id, undelivered: false, status: 'retrying' });
  });
});

/** A publisher that keeps the events it accepted. */
function recordingPublisher() {
  const events: JobReadyEvent[] = [];
  const publisher: JobPublisher = {
    maxBatch: 10,
    async publish(batch) {
      events.push(...batch);
      return batch.map(() => ({ ok: true as const }));
    },
  };
  return { publisher, events };
}

describe('fetch-ready drains at capacity', () => {
  test('keeps claiming while claims come back full, and stops when capacity runs out', async () => {
    const tracker = trackerOver(t.db);
    await enqueue(tracker, 'capped', 20);
    await enqueue(tracker, 'free', 25);
    const { publisher, events } = recordingPublisher();
    let chains = 0;
    const result = await fanOutDueJobs(tracker, publisher, {
      batchSize: 10,
      chain: async () => {
        chains++;
      },
    });
    // 3 capped (their limit) and all 25 free, in claims of 10 until one came back short.
    expect(events.filter((e) => e.jobType === 'capped')).toHaveLength(3);
    expect(events.filter((e) => e.jobType === 'free')).toHaveLength(25);
    expect(result.chained).toBe(false);
    expect(chains).toBe(0);
    expect(result.queue.depth).toBe(17);
  });

  test('stops when work runs out, and chains one more run when its budget ends with work left', async () => {
    const tracker = trackerOver(t.db);
    await enqueue(tracker, 'free', 25);
    let budget = 2;
    let chains = 0;
    const { publisher, events } = recordingPublisher();
    const result = await fanOutDueJobs(tracker, publisher, {
      batchSize: 10,
      shouldContinue: () => --budget > 0,
      chain: async () => {
        chains++;
      },
    });
    expect(events).toHaveLength(20);
    expect(result).toMatchObject({ claims: 2, chained: true });
    expect(chains).toBe(1);
    const rest = await fanOutDueJobs(tracker, publisher, { batchSize: 10, chain: async () => void chains++ });
    expect(rest).toMatchObject({ claimed: 5, chained: false });
    expect(chains).toBe(1);
  });

  test('a job of a type with no executor fails at once, permanently, with the reason', async () => {
    const tracker = trackerOver(t.db);
    await enqueue(tracker, 'free', 2);
    await t.db.query(
      `INSERT INTO jobs (job_type, payload, scheduled_at) VALUES ('from-a-newer-client', '{}', :at)`,
      { at: clock.now() },
    );
    const { publisher, events } = recordingPublisher();
    const result = await fanOutDueJobs(tracker, publisher, {
      hasExecutor: (type) => tracker.registry.get(type) !== undefined,
    });
    expect(events.map((e) => e.jobType)).toEqual(['free', 'free']);
    expect(result.noExecutor).toEqual([expect.objectContaining({ jobType: 'from-a-newer-client' })]);
    const orphan = await tracker.getJob(result.noExecutor[0]!.jobId);
    expect(orphan).toMatchObject({ status: 'failed' });
    expect(orphan!.lastError).toContain('no executor for job type "from-a-newer-client"');
  });

  test('a run woken by a nudge claims once more at the end of its window', async () => {
    const tracker = trackerOver(t.db);
    const { publisher, events } = recordingPublisher();
    const sentAt = clock.now().getTime();
    const o = createObservability('fetch-ready-test', { silent: true });
    const handler = createFetchReadyHandler({
      runtime: { db: t.db, registry: tracker.registry, tracker } as unknown as JobRuntime,
      publisher,
      o,
      nowMs: () => clock.now().getTime(),
      // While the run waits, another sender's job arrives (its own nudge skipped inside the window).
      sleep: async (ms) => {
        await enqueue(tracker, 'free', 1);
        clock.advance(ms);
      },
    });
    await enqueue(tracker, 'free', 1);
    const result = await handler({
      'detail-type': JOBS_ENQUEUED_DETAIL_TYPE,
      detail: { sentAt: new Date(sentAt).toISOString(), windowMs: 1000 },
    });
    expect(events).toHaveLength(2);
    expect(result.claims).toBe(2);
    // A nudged run does not report the minute's activity; the schedule's run does, once a minute.
    expect(result.activity).toBeUndefined();
    const scheduled = await handler({ 'detail-type': 'Scheduled Event', detail: {} });
    expect(scheduled.activity).toEqual({ enqueuedLastMinute: 2, runningPastTimeout: 0 });
    expect(lingerUntil({ 'detail-type': 'Scheduled Event', detail: {} }, sentAt)).toBeUndefined();
  });
});

test('nudges are coalesced: one per window per sender, and a failed one leaves the window open', async () => {
  const eventBridge = mockClient(EventBridgeClient);
  try {
    let now = 1_000_000;
    let fail = false;
    eventBridge.on(PutEventsCommand).callsFake(() =>
      fail
        ? {
            FailedEntryCount: 1,
            Entries: [{ ErrorCode: 'ThrottlingException', ErrorMessage: 'slow down' }],
          }
        : { FailedEntryCount: 0, Entries: [{ EventId: 'e' }] },
    );
    const nudge = createEnqueuedNudge({
      busName: 'bus',
      client: new EventBridgeClient({}),
      nowMs: () => now,
    });
    for (let i = 0; i < 100; i++) {
      await nudge();
      now += 10; // 100 enqueues a second
    }
    expect(eventBridge.commandCalls(PutEventsCommand)).toHaveLength(1);
    const detail = JSON.parse(
      eventBridge.commandCalls(PutEventsCommand)[0]!.args[0].input.Entries![0]!.Detail!,
    );
    expect(detail).toMatchObject({ windowMs: 1000, reason: 'enqueued' });
    await nudge();
    expect(eventBridge.commandCalls(PutEventsCommand)).toHaveLength(2);
    now += 1000;
    fail = true;
    await expect(nudge()).rejects.toThrow(/not accepted/);
    fail = false;
    await nudge();
    expect(eventBridge.commandCalls(PutEventsCommand)).toHaveLength(4);
  } finally {
    eventBridge.restore();
  }
});

/** The executor Lambda's loop (shared/aws/executor.ts) for the `capped` type. */
function executorFor<M extends JobTypeMap>(
  tracker: JobTracker<M, Services>,
  dispatcher: JobDispatcher<M, Services>,
) {
  return new AwsExecutor({
    tracker,
    dispatcher,
    jobType: 'capped',
    log: createObservability('executor-test', { silent: true }).logger,
  });
}

/** The `capped` type's executor handler over `db`, running jobs into `services`. */
function cappedExecutor(
  db: Database,
  tracker: ReturnType<typeof trackerOver>,
  services: Services,
  publisher?: JobPublisher,
) {
  return createExecutorHandler({
    runtime: { db, registry: tracker.registry, tracker } as unknown as JobRuntime,
    dispatcher: new JobDispatcher(tracker.registry, services) as unknown as LendingDispatcher,
    jobType: 'capped',
    o: createObservability('executor-test', { silent: true }),
    publisher,
  });
}

/** The `job.ready` event fetch-ready publishes for a claimed job. */
function jobReadyEvent(job: { id: string; jobType: string; attempts: number }) {
  return {
    source: 'lana.jobs',
    'detail-type': 'job.ready',
    detail: { jobId: job.id, jobType: job.jobType, attempt: job.attempts, payload: {} },
  };
}

describe('executors take their type’s next job', () => {
  function lambdaContext(remainingMs: () => number): Context {
    return { getRemainingTimeInMillis: remainingMs } as Context;
  }

  test('an invocation runs further due jobs of its type within the limit, while a whole attempt fits', async () => {
    const tracker = trackerOver(t.db);
    const services: Services = { runs: [] };
    const handler = cappedExecutor(t.db, tracker, services);
    await enqueue(tracker, 'capped', 6);
    await enqueue(tracker, 'free', 2);
    const [first] = await tracker.fetchReady(1);
    // Time for four more after the delivered job (each attempt needs 90 s: its 60 s timeout plus 30).
    let remaining = 4 * 90_000 + 1;
    const result = await handler(
      jobReadyEvent(first!),
      lambdaContext(() => {
        const left = remaining;
        remaining -= 90_000;
        return left;
      }),
    );
    expect(result).toEqual({ outcome: 'completed', nextJobsRun: 4 });
    expect(services.runs).toHaveLength(5);
    // Only its own type; the sixth waits.
    const counts = await t.db.query<{ job_type: string; status: string; n: number }>(
      'SELECT job_type, status, count(*)::integer AS n FROM jobs GROUP BY 1, 2 ORDER BY 1, 2',
    );
    expect(counts.rows).toEqual([
      { job_type: 'capped', status: 'completed', n: 5 },
      { job_type: 'capped', status: 'pending', n: 1 },
      { job_type: 'free', status: 'pending', n: 2 },
    ]);
  });

  test('the next job is not taken when the type is at its limit', async () => {
    const tracker = trackerOver(t.db);
    const services: Services = { runs: [] };
    const handler = cappedExecutor(t.db, tracker, services);
    await enqueue(tracker, 'capped', 6);
    const claimed = await tracker.fetchReady(10); // 3: the limit
    expect(claimed).toHaveLength(3);
    const [first, ...others] = claimed;
    // The other two hold their slots (delivered, not yet begun); the first's slot is refilled once.
    const result = await handler(
      jobReadyEvent(first!),
      lambdaContext(() => 3_600_000),
    );
    expect(result.outcome).toBe('completed');
    expect(result.nextJobsRun).toBe(3);
    expect(await runningCount('capped')).toBe(others.length);
    expect(services.runs).toHaveLength(4);
  });
});

describe('an executor out of time for another job hands its slot to a new invocation', () => {
  // Less than a whole attempt (60 s timeout + 30 s) left: the delivered job runs, the next is published.
  const outOfTime = { getRemainingTimeInMillis: () => 60_000 } as Context;

  test('its completion claims the type’s next due job, which is published, not run', async () => {
    const tracker = trackerOver(t.db);
    const services: Services = { runs: [] };
    const { publisher, events } = recordingPublisher();
    const handler = cappedExecutor(t.db, tracker, services, publisher);
    await enqueue(tracker, 'capped', 2);
    const [first] = await tracker.fetchReady(1);
    const result = await handler(jobReadyEvent(first!), outOfTime);
    expect(result).toEqual({ outcome: 'completed', nextJobsRun: 0 });
    expect(services.runs).toHaveLength(1);
    expect(events).toHaveLength(1);
    // Claimed for a new invocation: under the dispatch lease, not begun.
    expect(await tracker.getJob(events[0]!.jobId)).toMatchObject({ status: 'running', startedAt: null });
  });

  test('within the type’s limit: a slot freed by the run is the only one handed over', async () => {
    const tracker = trackerOver(t.db);
    const services: Services = { runs: [] };
    const { publisher, events } = recordingPublisher();
    const handler = cappedExecutor(t.db, tracker, services, publisher);
    await enqueue(tracker, 'capped', 6);
    const [first] = await tracker.fetchReady(10); // 3: the limit
    await handler(jobReadyEvent(first!), outOfTime);
    expect(events).toHaveLength(1);
    expect(await runningCount('capped')).toBe(3);
  });

  test('a job whose event is refused goes back to the queue at once, uncounted', async () => {
    const tracker = trackerOver(t.db);
    const services: Services = { runs: [] };
    const refusing: JobPublisher = {
      maxBatch: 10,
      publish: async (batch) => batch.map(() => ({ ok: false as const, error: 'ThrottlingException' })),
    };
    const handler = cappedExecutor(t.db, tracker, services, refusing);
    await enqueue(tracker, 'capped', 2);
    const [first] = await tracker.fetchReady(1);
    await handler(jobReadyEvent(first!), outOfTime);
    const other = (await tracker.listJobs({ jobType: 'capped' })).find((j) => j.id !== first!.id)!;
    const back = await tracker.getJob(other.id);
    expect(back).toMatchObject({ status: 'pending', startedAt: null });
    expect(back!.scheduledAt.getTime()).toBeLessThanOrEqual(clock.now().getTime());
    // Recorded as released: not an attempt toward its budget.
    expect((await tracker.getExecutions(other.id)).map((e) => e.outcome)).toEqual(['released']);
    expect(await runningCount('capped')).toBe(0);
  });
});

describe('complete and take the next job in one statement', () => {
  test('over the Data API an executor pays one call per job it keeps running', async () => {
    const tracker = trackerOver(dataApi);
    const services: Services = { runs: [] };
    const handler = cappedExecutor(dataApi, tracker, services);
    await enqueue(trackerOver(t.db), 'capped', 5);
    const [first] = await trackerOver(t.db).fetchReady(1);
    fixture.resetCounts();
    const result = await handler(jobReadyEvent(first!), {
      getRemainingTimeInMillis: () => 3_600_000,
    } as Context);
    expect(result).toEqual({ outcome: 'completed', nextJobsRun: 4 });
    // The start, then one statement per job: its completion and the next claim (the last finds none).
    // Plus, once per process, the statement that makes the type's slot rows.
    expect(fixture.counts.Execute).toBe(1 + 5 + 1);
    expect(await runningCount('capped')).toBe(0);
    const history = await t.db.query<{ n: number }>(
      "SELECT count(*)::integer AS n FROM job_executions WHERE outcome = 'completed'",
    );
    expect(history.rows[0]!.n).toBe(5);
  });

  test('a resent statement reports its completion and answers with the job it claimed', async () => {
    const tracker = trackerOver(dataApi);
    const pg = trackerOver(t.db);
    await enqueue(pg, 'capped', 3);
    const [a] = await pg.fetchReady(1, { startNow: true });
    fixture.injectFault({
      error: 'InternalServerErrorException',
      status: 500,
      operation: 'Execute',
      afterRunning: true,
    });
    // The SDK's default retries, as on AWS: the lost answer makes it send the statement again.
    const retrying = dataApiDriverOver(fixture, t.name, { sdkRetries: true });
    try {
      fixture.resetCounts();
      const { completed, next } = await trackerOver(retrying).completeAndClaimNext(
        { id: a!.id, attempt: a!.attempts, durationMs: 5 },
        'capped',
      );
      // The process's first limited claim makes the slot rows; then the statement and its resend.
      expect(fixture.counts.Execute).toBe(1 + 2);
      expect(completed).toBe(true);
      expect(next).not.toBeNull();
      // Exactly the job the caller got is running: the resend claimed nothing more.
      const running = await t.db.query<{ id: string }>("SELECT id FROM jobs WHERE status = 'running'");
      expect(running.rows.map((r) => r.id)).toEqual([next!.id]);
      expect(await tracker.getJob(a!.id)).toMatchObject({ status: 'completed' });
    } finally {
      await retrying.close();
    }
  });
});
