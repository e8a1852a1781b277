import { EventBridgeClient, PutEventsCommand, type PutEventsCommandInput } from '@aws-sdk/client-eventbridge';
import { RDSDataClient } from '@aws-sdk/client-rds-data';
import { mockClient } from 'aws-sdk-client-mock';
import * as z from 'zod';
import { createExecutorHandler } from '../../functions/executor/handler.js';
import { createFetchReadyHandler } from '../../functions/fetch-ready/handler.js';
import { createObservability } from '../../functions/lib/powertools.js';
import type { JobRuntime, SeedDispatcher } from '../../functions/lib/runtime.js';
import {
  createEnqueuedNudge,
  createEventBridgePublisher,
  JOB_EVENT_DETAIL_TYPE,
  JOBS_ENQUEUED_DETAIL_TYPE,
} from '../../shared/aws/eventbridge-publisher.js';
import { AwsJobClient } from '../../shared/aws/job-client.js';
import { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import type { Database, Queryable, Row, SqlParams } from '../../shared/db/port.js';
import type { Clock } from '../../shared/jobs/clock.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { handOverSlot } from '../../shared/jobs/fan-out.js';
import { JobTypeRegistry } from '../../shared/jobs/registry.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { startDataApiFixture } from '../../test/support/data-api-fixture.js';
import { prng } from '../../test/support/prng.js';
import { SimLambda } from './lambda.js';
import { VirtualTime } from './virtual-time.js';

/** One scenario: how jobs arrive, how long they run, how many may run at once. */
export interface Scenario {
  name: string;
  /** Jobs due at the start (enqueued in bulk, then fetch-ready is woken once). */
  backlog?: number;
  /** Or jobs enqueued one per call, each nudging, at this rate for this long. */
  stream?: { perSecond: number; seconds: number };
  /** Each job's nominal run time; runs are drawn within ±20 % of it. */
  durationMs: number;
  /** The job type's concurrency (and its executor function's reserved concurrency). */
  concurrency: number;
}

export interface SimulationOptions {
  seed: number;
  /** Virtual latency of each Data API call. Default 20 ms. */
  dataApiLatencyMs?: number;
  /** Virtual latency of each PutEvents call. Default 20 ms. */
  putEventsLatencyMs?: number;
  /** From an event reaching Lambda's queue to its invocation starting. Default 50 ms. */
  deliveryMs?: number;
}

/** us-east-1 list prices (USD). */
export const PRICES = {
  dataApiPerRequest: 0.35 / 1e6,
  putEventsPerEntry: 1.0 / 1e6,
  lambdaPerRequest: 0.2 / 1e6,
  /** arm64, per GB-second. */
  lambdaPerGbSecond: 0.0000133334,
  /** Every function's memory (infra/lambda-function.ts). */
  lambdaMemoryGb: 0.5,
};

export interface ScenarioResult {
  name: string;
  jobs: number;
  drainSeconds: number;
  idealSeconds: number;
  drainVsIdeal: number;
  attemptsPerJobMax: number;
  jobsFailedWithoutRun: number;
  attemptsBurned: number;
  dlqEvents: number;
  overlappingAttempts: number;
  maxConcurrentExecutions: number;
  concurrencyLimit: number;
  pickupP99Seconds: number;
  fetchReadyInvocations: number;
  fetchReadyPerSecondMax: number;
  dataApiCallsPerJob: number;
  putEventsCallsPerJob: number;
  costPerMillionJobsUsd: number;
  throttles: number;
  executorInvocations: number;
  virtualSeconds: number;
}

const JOB_TYPE = 'sim-work';
const BUS = 'lana-jobs-sim';
/** The stack's settings (infra/): fetch-ready 90 s and 2 at once, executors 900 s, events 60 s old at most. */
const FETCH_READY = { timeoutMs: 90_000, concurrency: 2 };
const EXECUTOR_TIMEOUT_MS = 900_000;
const MAX_EVENT_AGE_MS = 60_000;

/** The database port with a virtual latency per call, counted, each call's real I/O held by the engine. */
class SimDatabase implements Database {
  calls = 0;
  readonly driverName: Database['driverName'];
  readonly maxRowBytes: number | undefined;
  readonly maxRequestBytes: number | undefined;
  readonly resendsStatements: boolean | undefined;

  constructor(
    private readonly inner: Database,
    private readonly vt: VirtualTime,
    private readonly latencyMs: number,
  ) {
    this.driverName = inner.driverName;
    this.maxRowBytes = inner.maxRowBytes;
    this.maxRequestBytes = inner.maxRequestBytes;
    this.resendsStatements = inner.resendsStatements;
  }

  async query<R extends Row = Row>(sql: string, params?: SqlParams) {
    this.calls++;
    await this.vt.sleep(this.latencyMs);
    return this.vt.real(() => this.inner.query<R>(sql, params));
  }

  transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T> {
    return this.inner.transaction((tx) =>
      work({
        query: async <R extends Row = Row>(sql: string, params?: SqlParams) => {
          this.calls++;
          await this.vt.sleep(this.latencyMs);
          return this.vt.real(() => tx.query<R>(sql, params));
        },
      }),
    );
  }

  close() {
    return this.inner.close();
  }
}

/**
 * Runs one scenario: the real fetch-ready and executor handlers, the real SQL through the Data API driver
 * and the local Data API fixture, on a real PostgreSQL (`pg`, a fresh migrated database named
 * `databaseName` at `url`), in virtual time. Modelled around them: the `rate(1 minute)` schedule,
 * PutEvents → rule → target, Lambda's asynchronous queue with reserved concurrency, throttling and its
 * retry backoff up to the event's maximum age, then the on-failure queue.
 */
export async function simulate(
  scenario: Scenario,
  database: { pg: Database; url: string; name: string },
  options: SimulationOptions,
): Promise<ScenarioResult> {
  const vt = new VirtualTime(Math.floor(Date.now() / 1000) * 1000);
  const random = prng(options.seed);
  const latencyMs = options.dataApiLatencyMs ?? 20;
  const putLatencyMs = options.putEventsLatencyMs ?? 20;
  const deliveryMs = options.deliveryMs ?? 50;
  const clock: Clock = { now: () => vt.date() };

  // The job: a run of a drawn duration; every run is recorded (start, end) by job and attempt.
  const runs: { jobId: string; attempt: number; start: number; end: number }[] = [];
  let running = 0;
  let maxRunning = 0;
  const finishedJobs = new Set<string>();
  const registry = new JobTypeRegistry<Record<never, never>, undefined>().register({
    type: JOB_TYPE,
    description: 'a simulated job of a drawn duration',
    schema: z.object({ n: z.number().int() }),
    concurrency: scenario.concurrency,
    timeoutSeconds: 60,
    execute: async (_payload, ctx) => {
      const run = { jobId: ctx.job.id, attempt: ctx.attempt, start: vt.now, end: Number.NaN };
      runs.push(run);
      running++;
      maxRunning = Math.max(maxRunning, running);
      await vt.sleep(scenario.durationMs * (0.8 + 0.4 * random()));
      running--;
      run.end = vt.now;
      finishedJobs.add(ctx.job.id);
      return undefined;
    },
  });

  const fixture = await startDataApiFixture(database.url, { poolSize: 20 });
  const rdsClient = new RDSDataClient({
    endpoint: fixture.endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
    maxAttempts: 1,
  });
  const dataApi = (latency: number) =>
    new SimDatabase(
      new DataApiDatabase({
        resourceArn: 'arn:aws:rds:us-east-1:123456789012:cluster:lana-jobs',
        secretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:lana-jobs',
        database: database.name,
        client: rdsClient,
      }),
      vt,
      latency,
    );
  // The job system's own calls (fetch-ready, executors) and the application's enqueues, counted apart.
  const systemDb = dataApi(latencyMs);
  const appDb = dataApi(latencyMs);

  // PutEvents → rules → targets, through the real EventBridge client with its transport replaced.
  let putEventsCalls = 0;
  let putEventsEntries = 0;
  const eventBridge = mockClient(EventBridgeClient);
  const o = createObservability('simulation', { silent: true });
  const tracker = new JobTracker({ db: systemDb, registry, clock });
  const runtime = { db: systemDb, registry, tracker } as unknown as JobRuntime;
  const bus = new EventBridgeClient({ region: 'us-east-1' });
  const chain = createEnqueuedNudge({ busName: BUS, client: bus, windowMs: 0, reason: 'continue' });
  const fetchReadyHandler = createFetchReadyHandler({
    runtime,
    publisher: createEventBridgePublisher({ busName: BUS, client: bus }),
    o,
    chain,
    nowMs: () => vt.nowMs(),
    sleep: (ms) => vt.sleep(ms),
  });
  const publisher = createEventBridgePublisher({ busName: BUS, client: bus });
  const executorHandler = createExecutorHandler({
    runtime,
    dispatcher: new JobDispatcher(registry, undefined) as unknown as SeedDispatcher,
    jobType: JOB_TYPE,
    o,
    handOver: () => handOverSlot(tracker, publisher, JOB_TYPE),
  });
  const fetchReady = new SimLambda(vt, {
    name: 'fetch-ready',
    concurrency: FETCH_READY.concurrency,
    timeoutMs: FETCH_READY.timeoutMs,
    maxEventAgeMs: MAX_EVENT_AGE_MS,
    deliveryMs,
    handler: (event, context) => fetchReadyHandler(event, context),
  });
  const executor = new SimLambda(vt, {
    name: 'executor',
    concurrency: scenario.concurrency,
    timeoutMs: EXECUTOR_TIMEOUT_MS,
    maxEventAgeMs: MAX_EVENT_AGE_MS,
    deliveryMs,
    handler: (event, context) => executorHandler(event, context),
  });
  eventBridge.on(PutEventsCommand).callsFake(async (input: PutEventsCommandInput) => {
    putEventsCalls++;
    const entries = input.Entries ?? [];
    putEventsEntries += entries.length;
    await vt.sleep(putLatencyMs);
    for (const e of entries) {
      const event = { source: e.Source, 'detail-type': e.DetailType, detail: JSON.parse(e.Detail ?? '{}') };
      if (e.DetailType === JOB_EVENT_DETAIL_TYPE) executor.invoke(event);
      else if (e.DetailType === JOBS_ENQUEUED_DETAIL_TYPE) fetchReady.invoke(event);
    }
    return { FailedEntryCount: 0, Entries: entries.map((_, i) => ({ EventId: `e${putEventsCalls}-${i}` })) };
  });

  try {
    // The schedule: fetch-ready every minute.
    const tick = () => {
      fetchReady.invoke({ source: 'aws.events', 'detail-type': 'Scheduled Event', detail: {} });
      vt.at(vt.now + 60_000, tick);
    };
    vt.at(60_000, tick);

    const enqueuedAt = new Map<string, number>();
    let total = 0;
    let enqueueDone = false;
    if (scenario.backlog) {
      total = scenario.backlog;
      const seeder = new JobTracker({ db: database.pg, registry, clock });
      for (let from = 0; from < total; from += 10_000) {
        const batch = Array.from({ length: Math.min(10_000, total - from) }, (_, i) => ({
          type: JOB_TYPE as typeof JOB_TYPE,
          payload: { n: from + i },
        }));
        const results = await seeder.enqueueMany(batch);
        for (const r of results) enqueuedAt.set(r.job.id, 0);
      }
      enqueueDone = true;
      fetchReady.invoke({ source: 'lana.jobs', 'detail-type': JOBS_ENQUEUED_DETAIL_TYPE, detail: {} });
    } else if (scenario.stream) {
      // The application: one process enqueueing through AwsJobClient, one job per call, each nudging.
      const app = new AwsJobClient({
        registry,
        db: appDb,
        busName: BUS,
        eventBridge: bus,
        clock,
        nowMs: () => vt.nowMs(),
      });
      total = Math.round(scenario.stream.perSecond * scenario.stream.seconds);
      const interval = 1000 / scenario.stream.perSecond;
      let sent = 0;
      let answered = 0;
      const next = () => {
        const n = sent++;
        const at = vt.now;
        void app.enqueue({ type: JOB_TYPE, payload: { n } }).then((r) => {
          enqueuedAt.set(r.job.id, at);
          if (++answered === total) enqueueDone = true;
        });
        if (sent < total) vt.at(Math.round(sent * interval), next);
      };
      vt.at(0, next);
    }

    await vt.run(() => enqueueDone && finishedJobs.size >= total && executor.running === 0);
    // Let the last completions be recorded.
    const settleUntil = vt.now + 5_000;
    await vt.run(() => vt.now >= settleUntil);

    const rows = await database.pg.query<{
      id: string;
      status: string;
      counted: number;
    }>('SELECT id::text AS id, status, attempts - attempt_offset AS counted FROM jobs');
    const runsByJob = new Map<string, typeof runs>();
    for (const r of runs) {
      const list = runsByJob.get(r.jobId) ?? [];
      list.push(r);
      runsByJob.set(r.jobId, list);
    }
    let attemptsBurned = 0;
    let attemptsPerJobMax = 0;
    let jobsFailedWithoutRun = 0;
    let overlapping = 0;
    const pickups: number[] = [];
    for (const row of rows.rows) {
      const jobRuns = (runsByJob.get(row.id) ?? []).sort((a, b) => a.start - b.start);
      attemptsBurned += Math.max(0, row.counted - jobRuns.length);
      attemptsPerJobMax = Math.max(attemptsPerJobMax, row.counted);
      if (row.status === 'failed' && jobRuns.length === 0) jobsFailedWithoutRun++;
      for (let i = 1; i < jobRuns.length; i++) if (jobRuns[i]!.start < jobRuns[i - 1]!.end) overlapping++;
      const first = jobRuns[0];
      const at = enqueuedAt.get(row.id);
      if (first && at !== undefined) pickups.push((first.start - at) / 1000);
    }
    if (rows.rows.some((r) => r.status !== 'completed'))
      throw new Error(`${scenario.name}: not every job completed`);
    pickups.sort((a, b) => a - b);
    const lastEnd = Math.max(...runs.map((r) => r.end));
    const drainSeconds = lastEnd / 1000;
    const idealSeconds = (total * scenario.durationMs) / scenario.concurrency / 1000;
    const perSecond = new Map<number, number>();
    for (const s of fetchReady.starts)
      perSecond.set(Math.floor(s / 1000), (perSecond.get(Math.floor(s / 1000)) ?? 0) + 1);
    const lambdaRequests = fetchReady.invocations + executor.invocations;
    const gbSeconds = ((fetchReady.busyMs + executor.busyMs) / 1000) * PRICES.lambdaMemoryGb;
    const cost =
      systemDb.calls * PRICES.dataApiPerRequest +
      putEventsEntries * PRICES.putEventsPerEntry +
      lambdaRequests * PRICES.lambdaPerRequest +
      gbSeconds * PRICES.lambdaPerGbSecond;
    const round = (n: number, d = 3) => +n.toFixed(d);
    return {
      name: scenario.name,
      jobs: total,
      drainSeconds: round(drainSeconds, 1),
      idealSeconds: round(idealSeconds, 1),
      drainVsIdeal: round(drainSeconds / idealSeconds),
      attemptsPerJobMax,
      jobsFailedWithoutRun,
      attemptsBurned,
      dlqEvents: fetchReady.onFailure + executor.onFailure,
      overlappingAttempts: overlapping,
      maxConcurrentExecutions: maxRunning,
      concurrencyLimit: scenario.concurrency,
      pickupP99Seconds: round(pickups[Math.min(pickups.length - 1, Math.floor(pickups.length * 0.99))] ?? 0),
      fetchReadyInvocations: fetchReady.invocations,
      fetchReadyPerSecondMax: Math.max(0, ...perSecond.values()),
      dataApiCallsPerJob: round(systemDb.calls / total),
      putEventsCallsPerJob: round(putEventsCalls / total),
      costPerMillionJobsUsd: round((cost / total) * 1e6, 2),
      throttles: fetchReady.throttles + executor.throttles,
      executorInvocations: executor.invocations,
      virtualSeconds: round(vt.now / 1000, 1),
    };
  } finally {
    eventBridge.restore();
    rdsClient.destroy();
    await fixture.close();
  }
}

/** The scenarios, scaled (1 = full size). */
export function scenarios(scale = 1): Scenario[] {
  const n = (x: number) => Math.max(1, Math.round(x * scale));
  return [
    { name: 'S1 backlog', backlog: n(100_000), durationMs: 1000, concurrency: 50 },
    { name: 'S2 overload', backlog: n(10_000), durationMs: 10_000, concurrency: 5 },
    { name: 'S3 steady', stream: { perSecond: 50, seconds: n(600) }, durationMs: 200, concurrency: 20 },
    { name: 'S4 nudge storm', stream: { perSecond: 100, seconds: n(120) }, durationMs: 100, concurrency: 20 },
  ];
}
