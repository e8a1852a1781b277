import { EventBridgeClient, PutEventsCommand, type PutEventsCommandInput } from '@aws-sdk/client-eventbridge';
import { RDSDataClient } from '@aws-sdk/client-rds-data';
import type { Context } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import * as z from 'zod';
import { createExecutorHandler } from '../../functions/executor/handler.js';
import { createFetchReadyHandler } from '../../functions/fetch-ready/handler.js';
import { createObservability } from '../../functions/lib/powertools.js';
import type { JobRuntime, LendingDispatcher } from '../../functions/lib/runtime.js';
import { createEventBridgePublisher, JOB_EVENT_DETAIL_TYPE } from '../../shared/aws/eventbridge-publisher.js';
import type { FanOutResult } from '../../shared/aws/fetch-ready.js';
import { AwsJobClient } from '../../shared/aws/job-client.js';
import { createEnqueuedNudge, JOBS_ENQUEUED_DETAIL_TYPE } from '../../shared/aws/waker.js';
import { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import type { Database } from '../../shared/db/port.js';
import type { Clock } from '../../shared/jobs/clock.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { JobTypeRegistry } from '../../shared/jobs/registry.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { startDataApiFixture } from '../../test/support/data-api-fixture.js';
import { prng } from '../../test/support/prng.js';
import { DatabaseModel, SimDatabase } from './database.js';
import { AccountConcurrency, currentInvocation, SimLambda } from './lambda.js';
import {
  type Faults,
  NO_FAULTS,
  PRICES,
  plannedWorkMs,
  type Scenario,
  type ScenarioResult,
  type SimulationOptions,
  typeLoads,
} from './scenarios.js';
import { VirtualTime } from './virtual-time.js';

export * from './scenarios.js';

const BUS = 'lana-jobs-sim';
/** The stack's settings (infra/): fetch-ready 90 s (2 at once where reserved), executors 900 s, events 60 s old at most. */
const FETCH_READY = { timeoutMs: 90_000, concurrency: 2 };
const EXECUTOR_TIMEOUT_MS = 900_000;
const MAX_EVENT_AGE_MS = 60_000;
/** A new environment's init phase: the executor bundle is 735 KiB minified (`npm run build:functions`). */
export const DEFAULT_COLD_START_MS = 400;
/**
 * A run that has not ended all its jobs this long after the last arrival stops (they count as lost), or
 * three times its planned work at its limits when that is longer (S2 at full size: 10,000 jobs of 10 s,
 * five at a time, is 5.6 hours of work).
 */
const GIVE_UP_AFTER_MS = 3 * 3600_000;

/** The most of `sorted` (times, ms) in any window (t - windowMs, t]. */
function mostInAnyWindow(sorted: readonly number[], windowMs: number): number {
  let most = 0;
  let from = 0;
  for (let i = 0; i < sorted.length; i++) {
    while (Math.round(sorted[from]!) <= Math.round(sorted[i]!) - windowMs) from++;
    most = Math.max(most, i - from + 1);
  }
  return most;
}

const percentile = (sorted: number[], p: number) =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;

/**
 * Runs one scenario: the real fetch-ready and executor handlers, the real SQL through the Data API driver
 * and the local Data API fixture, on a real PostgreSQL (`pg`, a fresh migrated database named `name` at
 * `url`), in virtual time. Modelled around them: the database's time and the Data API's latency
 * (`database.ts`), the `rate(1 minute)` schedule, PutEvents → rule → target, Lambda's asynchronous queue,
 * concurrency, execution environments and timeouts (`lambda.ts`), and the scenario's faults.
 */
export async function simulate(
  scenario: Scenario,
  database: { pg: Database; url: string; name: string },
  options: SimulationOptions,
): Promise<ScenarioResult> {
  const model = options.model ?? 'charged';
  const legacy = model === 'legacy';
  const vt = new VirtualTime(Math.floor(Date.now() / 1000) * 1000);
  // Separate streams, so switching a fault on does not change the jobs' durations.
  const durations = prng(options.seed);
  const faultDraws = prng(options.seed ^ 0x5eed);
  const lambdaDraws = prng(options.seed ^ 0x1a3bd);
  const putLatencyMs = options.putEventsLatencyMs ?? 20;
  const deliveryMs = options.deliveryMs ?? 50;
  const faults: Faults = { ...NO_FAULTS, ...scenario.faults };
  const clock: Clock = { now: () => vt.date() };
  const loads = typeLoads(scenario);

  const dbModel = new DatabaseModel(vt, {
    model,
    latencyMs: options.dataApiLatencyMs ?? 20,
    acu: options.acu ?? 4,
    commitMs: options.commitMs,
    serverErrorRate: faults.dataApiServerErrorRate,
    random: prng(options.seed ^ 0xdb),
  });

  // A provider's rate: its accepted calls' times per type, whole milliseconds (a provider does not tell
  // apart calls a fraction of a millisecond either side of its window's edge).
  let providerThrottles = 0;
  const providerCalls = new Map<string, number[]>();
  const providerAccepts = (type: string, rate: { limit: number; perSeconds: number }) => {
    const t = Math.round(vt.now);
    const calls = (providerCalls.get(type) ?? []).filter((c) => c > t - rate.perSeconds * 1000);
    providerCalls.set(type, calls);
    if (calls.length >= rate.limit) return false;
    calls.push(t);
    return true;
  };

  // The jobs: runs of a drawn duration, recorded (start, end) by job and attempt.
  const runs: { jobId: string; jobType: string; attempt: number; start: number; end: number }[] = [];
  const running = new Map<string, number>();
  const maxRunning = new Map<string, number>();
  let registry = new JobTypeRegistry<Record<never, never>, undefined>();
  for (const load of loads) {
    registry = registry.register({
      type: load.type,
      description: 'a simulated job of a drawn duration',
      schema: z.object({ n: z.number().int() }),
      concurrency: load.concurrency,
      timeoutSeconds: load.timeoutSeconds ?? 60,
      ...(load.priority !== undefined ? { priority: load.priority } : {}),
      ...(load.retry ? { retry: load.retry } : {}),
      ...(load.rateLimit ? { rateLimit: load.rateLimit } : {}),
      execute: async (_payload, ctx) => {
        const run = {
          jobId: ctx.job.id,
          jobType: load.type,
          attempt: ctx.attempt,
          start: vt.now,
          end: Number.NaN,
        };
        runs.push(run);
        const now = (running.get(load.type) ?? 0) + 1;
        running.set(load.type, now);
        maxRunning.set(load.type, Math.max(maxRunning.get(load.type) ?? 0, now));
        const end = () => {
          run.end = vt.now;
          running.set(load.type, running.get(load.type)! - 1);
        };
        const duration = load.durationMs * (0.8 + 0.4 * durations());
        const fault = faultDraws();
        const invocation = currentInvocation();
        if (load.provider && !providerAccepts(load.type, load.provider)) {
          providerThrottles++;
          end();
          throw new Error('Throttling: Maximum sending rate exceeded');
        }
        if (fault < faults.executorKillRate) {
          await vt.sleep(duration * faultDraws());
          end();
          invocation?.kill();
          throw new Error('the execution environment died');
        }
        await vt.sleep(duration);
        end();
        if (invocation?.killed) throw new Error('the invocation was killed');
        if (fault < faults.executorKillRate + faults.executorErrorRate)
          throw new Error('a simulated failure');
        return undefined;
      },
    }) as typeof registry;
  }

  const fixture = await startDataApiFixture(database.url, {
    poolSize: 20,
    // Measured statements are their execution; Aurora's commit is charged apart (database.ts).
    synchronousCommit: legacy,
    onStatement: dbModel.lane.record,
  });
  const rdsClient = new RDSDataClient({
    endpoint: fixture.endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
    maxAttempts: 1,
  });
  const dataApi = () =>
    new SimDatabase(
      new DataApiDatabase({
        resourceArn: 'arn:aws:rds:us-east-1:123456789012:cluster:lana-jobs',
        secretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:lana-jobs',
        database: database.name,
        client: rdsClient,
      }),
      dbModel,
    );
  // The job system's own calls (fetch-ready, executors) and the application's, counted apart.
  const systemDb = dataApi();
  const appDb = dataApi();

  const eventBridge = mockClient(EventBridgeClient);
  const o = createObservability('simulation', { silent: true });
  const tracker = new JobTracker({ db: systemDb, registry, clock });
  const runtime = { db: systemDb, registry, tracker } as unknown as JobRuntime;
  const bus = new EventBridgeClient({ region: 'us-east-1' });
  const publisher = createEventBridgePublisher({ busName: BUS, client: bus });
  const chain = createEnqueuedNudge({ busName: BUS, client: bus, windowMs: 0, reason: 'continue' });
  const fetchReadyHandler = createFetchReadyHandler({
    runtime,
    publisher,
    o,
    chain,
    nowMs: () => vt.nowMs(),
    sleep: (ms) => vt.sleep(ms),
  });
  let handBacks = 0;
  const account = new AccountConcurrency(options.accountConcurrency ?? 1000);
  const reserve = options.reserveConcurrency ?? legacy;
  const coldStartMs = options.coldStartMs ?? (legacy ? 0 : DEFAULT_COLD_START_MS);
  const fetchReady = new SimLambda(vt, {
    name: 'fetch-ready',
    reservedConcurrency: reserve ? FETCH_READY.concurrency : undefined,
    account,
    timeoutMs: FETCH_READY.timeoutMs,
    maxEventAgeMs: MAX_EVENT_AGE_MS,
    deliveryMs,
    coldStartMs,
    random: lambdaDraws,
    handler: async (event, context) => {
      const r: FanOutResult = await fetchReadyHandler(event, context);
      handBacks += r.handedBack;
      return r;
    },
  });
  const executors = new Map<string, SimLambda>();
  for (const load of loads) {
    const handler = createExecutorHandler({
      runtime,
      dispatcher: new JobDispatcher(registry, undefined) as unknown as LendingDispatcher,
      jobType: load.type,
      o,
      publisher,
      nowMs: () => vt.nowMs(),
      sleep: (ms) => vt.sleep(ms),
    });
    executors.set(
      load.type,
      new SimLambda(vt, {
        name: `executor-${load.type}`,
        reservedConcurrency: reserve ? load.concurrency : undefined,
        account,
        timeoutMs: EXECUTOR_TIMEOUT_MS,
        maxEventAgeMs: MAX_EVENT_AGE_MS,
        deliveryMs,
        coldStartMs,
        random: lambdaDraws,
        handler: (event, context: Context) => handler(event, context),
      }),
    );
  }
  const lambdas = [fetchReady, ...executors.values()];

  // PutEvents → rules → targets, through the real EventBridge client with its transport replaced.
  let putEventsCalls = 0;
  let putEventsEntries = 0;
  let putEventsEntriesFailed = 0;
  let duplicatesDelivered = 0;
  eventBridge.on(PutEventsCommand).callsFake(async (input: PutEventsCommandInput) => {
    if (currentInvocation()?.killed) throw new Error('the invocation was killed');
    // The SDK's standard retry sends a throttled call again: 3 sends in all.
    for (let send = 1; ; send++) {
      putEventsCalls++;
      await vt.sleep(putLatencyMs);
      if (faultDraws() >= faults.putEventsThrottleRate) break;
      if (send === 3) throw Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' });
      await vt.sleep(100 * 2 ** (send - 1) * faultDraws());
    }
    const entries = input.Entries ?? [];
    putEventsEntries += entries.length;
    const route = (event: { 'detail-type'?: string; detail: { jobType?: string } }) => {
      if (event['detail-type'] === JOB_EVENT_DETAIL_TYPE)
        executors.get(event.detail.jobType ?? '')?.invoke(event);
      else if (event['detail-type'] === JOBS_ENQUEUED_DETAIL_TYPE) fetchReady.invoke(event);
    };
    return {
      FailedEntryCount: 0,
      Entries: entries.map((e, i) => {
        if (faultDraws() < faults.putEventsEntryFailureRate) {
          putEventsEntriesFailed++;
          return { ErrorCode: 'InternalFailure', ErrorMessage: 'simulated entry failure' };
        }
        const event = { source: e.Source, 'detail-type': e.DetailType, detail: JSON.parse(e.Detail ?? '{}') };
        route(event);
        if (e.DetailType === JOB_EVENT_DETAIL_TYPE && faultDraws() < faults.duplicateDeliveryRate) {
          duplicatesDelivered++;
          vt.at(vt.now + 1000 + 4000 * faultDraws(), () => route(event));
        }
        return { EventId: `e${putEventsCalls}-${i}` };
      }),
    };
  });

  try {
    // An operator's pause and resume (issue 27), straight on the database.
    const pauses = new Map<string, { at: Date; resumedAt?: Date }>();
    const operations: Promise<unknown>[] = [];
    const operator = new JobTracker({ db: database.pg, registry, clock });
    for (const load of loads) {
      if (!load.pause) continue;
      const operate = (work: () => Promise<unknown>) => {
        operations.push(vt.real(() => dbModel.lane.run(work)));
      };
      vt.at(load.pause.atSeconds * 1000, () => {
        pauses.set(load.type, { at: vt.date() });
        operate(() => operator.pauseType(load.type, { by: 'simulated operator', reason: 'provider down' }));
      });
      vt.at(load.pause.resumeAtSeconds * 1000, () => {
        pauses.get(load.type)!.resumedAt = vt.date();
        operate(() => operator.resumeType(load.type));
      });
    }

    // The schedule: fetch-ready every minute.
    const tick = () => {
      fetchReady.invoke({ source: 'aws.events', 'detail-type': 'Scheduled Event', detail: {} });
      vt.at(vt.now + 60_000, tick);
    };
    vt.at(60_000, tick);

    const enqueuedAt = new Map<string, number>();
    let total = 0;
    let pendingEnqueues = 0;
    let enqueueCalls = 0;
    let lastArrival = 0;

    const backlog = loads.filter((l) => l.backlog);
    if (backlog.length > 0) {
      const seeder = new JobTracker({ db: database.pg, registry, clock });
      for (const load of backlog) {
        for (let from = 0; from < load.backlog!; from += 10_000) {
          const batch = Array.from({ length: Math.min(10_000, load.backlog! - from) }, (_, i) => ({
            type: load.type,
            payload: { n: from + i },
          }));
          const results = await seeder.enqueueMany(batch as never);
          for (const r of results) enqueuedAt.set(r.job.id, 0);
          total += results.length;
        }
      }
      fetchReady.invoke({ source: 'lana.jobs', 'detail-type': JOBS_ENQUEUED_DETAIL_TYPE, detail: {} });
    }

    // The application: containers enqueueing through AwsJobClient, one job per call, each nudging.
    const senders = Array.from(
      { length: scenario.senders ?? 1 },
      () =>
        new AwsJobClient({
          registry,
          db: appDb,
          busName: BUS,
          eventBridge: bus,
          clock,
          nowMs: () => vt.nowMs(),
          onNudgeError: () => {},
        }),
    );
    let sent = 0;
    const arrive = (type: string, at: number) => {
      total++;
      pendingEnqueues++;
      lastArrival = Math.max(lastArrival, at);
      vt.at(at, () => {
        const sender = senders[sent++ % senders.length]!;
        enqueueCalls++;
        void sender.enqueue({ type, payload: { n: sent } } as never).then((r) => {
          enqueuedAt.set(r.job.id, at);
          pendingEnqueues--;
        });
      });
    };
    for (const load of loads) {
      if (load.stream) {
        const n = Math.round(load.stream.perSecond * load.stream.seconds);
        for (let i = 0; i < n; i++) arrive(load.type, Math.round((i * 1000) / load.stream.perSecond));
      }
      if (load.every)
        for (let i = 0; i < load.every.count; i++) arrive(load.type, i * load.every.periodSeconds * 1000);
    }

    // Done when every job is final (completed, failed, cancelled) and no executor runs.
    let notFinal = total;
    const poll = async () => {
      const r = await vt.real(() =>
        dbModel.lane.run(() =>
          database.pg.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM jobs WHERE status NOT IN ('completed', 'failed', 'cancelled')",
          ),
        ),
      );
      notFinal = r.rows[0]!.n;
    };
    const watch = () => {
      void poll().then(() => vt.at(vt.now + 5_000, watch));
    };
    vt.at(5_000, watch);
    const idle = () => [...executors.values()].every((e) => e.running === 0);
    const giveUpAfterMs = Math.max(GIVE_UP_AFTER_MS, 3 * plannedWorkMs(loads));
    await vt.run(
      () => (pendingEnqueues === 0 && notFinal === 0 && idle()) || vt.now > lastArrival + giveUpAfterMs,
    );
    await poll();
    await Promise.all(operations);
    // Let the last completions be recorded.
    const settleUntil = vt.now + 5_000;
    await vt.run(() => vt.now >= settleUntil);

    const rows = await database.pg.query<{ id: string; job_type: string; status: string; counted: number }>(
      'SELECT id::text AS id, job_type, status, attempts - attempt_offset AS counted FROM jobs',
    );
    const runsByJob = new Map<string, typeof runs>();
    for (const r of runs) {
      const list = runsByJob.get(r.jobId) ?? [];
      list.push(r);
      runsByJob.set(r.jobId, list);
    }
    let attemptsBurned = 0;
    let attemptsPerJobMax = 0;
    let jobsFailedWithoutRun = 0;
    let jobsNotFinal = 0;
    let jobsFailed = 0;
    let overlapping = 0;
    const pickups = new Map<string, number[]>();
    for (const row of rows.rows) {
      const jobRuns = (runsByJob.get(row.id) ?? []).sort((a, b) => a.start - b.start);
      attemptsBurned += Math.max(0, row.counted - jobRuns.length);
      attemptsPerJobMax = Math.max(attemptsPerJobMax, row.counted);
      if (row.status === 'failed') jobsFailed++;
      if (row.status === 'failed' && jobRuns.length === 0) jobsFailedWithoutRun++;
      if (!['completed', 'failed', 'cancelled'].includes(row.status)) jobsNotFinal++;
      for (let i = 1; i < jobRuns.length; i++) if (jobRuns[i]!.start < jobRuns[i - 1]!.end) overlapping++;
      const first = jobRuns[0];
      const at = enqueuedAt.get(row.id);
      if (first && at !== undefined) {
        const list = pickups.get(row.job_type) ?? [];
        list.push((first.start - at) / 1000);
        pickups.set(row.job_type, list);
      }
    }
    const round = (n: number, d = 3) => +n.toFixed(d);
    const byType: ScenarioResult['byType'] = {};
    for (const load of loads) {
      const list = (pickups.get(load.type) ?? []).sort((a, b) => a - b);
      const starts = runs
        .filter((r) => r.jobType === load.type)
        .map((r) => r.start)
        .sort((a, b) => a - b);
      const entry: ScenarioResult['byType'][string] = {
        jobs: rows.rows.filter((r) => r.job_type === load.type).length,
        pickupP99Seconds: round(percentile(list, 0.99)),
        maxRunning: maxRunning.get(load.type) ?? 0,
        limit: load.concurrency,
      };
      if (load.rateLimit) {
        entry.maxStartsPerRateWindow = mostInAnyWindow(starts, load.rateLimit.perSeconds * 1000);
        entry.rateLimit = load.rateLimit.limit;
      }
      const pause = pauses.get(load.type);
      if (pause?.resumedAt) {
        // Every attempt closes with one execution row: those claimed while the type was paused.
        const claimed = await database.pg.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM job_executions e JOIN jobs j ON j.id = e.job_id
           WHERE j.job_type = :type AND e.claimed_at > :paused AND e.claimed_at < :resumed`,
          { type: load.type, paused: pause.at, resumed: pause.resumedAt },
        );
        entry.claimsWhilePaused = claimed.rows[0]!.n;
        const resumedAt = pause.resumedAt.getTime() - vt.epochMs;
        const next = starts.find((t) => t >= resumedAt);
        if (next !== undefined) entry.resumeToStartSeconds = round((next - resumedAt) / 1000);
      }
      byType[load.type] = entry;
    }
    const allPickups = [...pickups.values()].flat().sort((a, b) => a - b);
    const lastEnd = Math.max(0, ...runs.map((r) => (Number.isNaN(r.end) ? 0 : r.end)));
    const drainSeconds = lastEnd / 1000;
    // The ideal: the slowest type's work at its concurrency, or at its rate.
    const idealSeconds = Math.max(
      ...loads.map((l) =>
        Math.max(
          (byType[l.type]!.jobs * l.durationMs) / l.concurrency / 1000,
          l.rateLimit ? (byType[l.type]!.jobs * l.rateLimit.perSeconds) / l.rateLimit.limit : 0,
        ),
      ),
    );
    const perSecond = new Map<number, number>();
    for (const s of fetchReady.starts)
      perSecond.set(Math.floor(s / 1000), (perSecond.get(Math.floor(s / 1000)) ?? 0) + 1);
    const lambdaRequests = lambdas.reduce((n, l) => n + l.invocations, 0);
    const gbSeconds = (lambdas.reduce((n, l) => n + l.busyMs, 0) / 1000) * PRICES.lambdaMemoryGb;
    // The job system's calls: its own, and the senders' beyond their enqueue statements (their claims).
    const dataApiCalls = systemDb.calls + Math.max(0, appDb.calls - enqueueCalls);
    const cost =
      dataApiCalls * PRICES.dataApiPerRequest +
      putEventsEntries * PRICES.putEventsPerEntry +
      lambdaRequests * PRICES.lambdaPerRequest +
      gbSeconds * PRICES.lambdaPerGbSecond;
    const first = loads[0]!;
    const allExecutors = [...executors.values()];
    return {
      name: scenario.name,
      model,
      jobs: total,
      drainSeconds: round(drainSeconds, 1),
      idealSeconds: round(idealSeconds, 1),
      drainVsIdeal: idealSeconds > 0 ? round(drainSeconds / idealSeconds) : 0,
      attemptsPerJobMax,
      jobsFailedWithoutRun,
      attemptsBurned,
      jobsNotFinal,
      jobsFailed,
      dlqEvents: lambdas.reduce((n, l) => n + l.dropped, 0) + allExecutors.reduce((n, l) => n + l.failed, 0),
      overlappingAttempts: overlapping,
      maxConcurrentExecutions: maxRunning.get(first.type) ?? 0,
      concurrencyLimit: first.concurrency,
      typesOverLimit: loads.filter((l) => (maxRunning.get(l.type) ?? 0) > l.concurrency).map((l) => l.type),
      pickupP99Seconds: round(percentile(allPickups, 0.99)),
      byType,
      fetchReadyInvocations: fetchReady.invocations,
      fetchReadyPerSecondMax: Math.max(0, ...perSecond.values()),
      dataApiCallsPerJob: round(dataApiCalls / total),
      putEventsCallsPerJob: round(putEventsCalls / total),
      costPerMillionJobsUsd: round((cost / total) * 1e6, 2),
      dbSecondsPerJob: round(dbModel.dbMs / 1000 / total, 6),
      lockWaitP99Ms: round(dbModel.lockWaitP99Ms(), 1),
      claimsDuringAnothersCommit:
        dbModel.claims === 0 ? 0 : round(dbModel.claimsDuringAnothersCommit / dbModel.claims),
      coldStarts: lambdas.reduce((n, l) => n + l.coldStarts, 0),
      handBacks,
      duplicatesDelivered,
      throttles: lambdas.reduce((n, l) => n + l.throttles, 0),
      lambdaTimeouts: lambdas.reduce((n, l) => n + l.timedOut, 0),
      providerThrottles,
      executorsKilled: allExecutors.reduce((n, l) => n + l.killed, 0),
      dataApiResends: dbModel.resends,
      putEventsEntriesFailed,
      executorInvocations: allExecutors.reduce((n, l) => n + l.invocations, 0),
      virtualSeconds: round(vt.now / 1000, 1),
      ...(options.statements ? { costliestStatements: dbModel.costliest() } : {}),
    };
  } finally {
    eventBridge.restore();
    rdsClient.destroy();
    await fixture.close();
  }
}
