import type { RetrySettings } from '../../shared/jobs/retry-policy.js';
import type { DatabaseModel } from './database.js';

/** What the simulator runs (`simulate.ts`): the scenarios, their loads and faults, and what a run reports. */

/** One job type's load in a scenario: how its jobs arrive, how long they run, how many may run at once. */
export interface TypeLoad {
  type: string;
  /** The type's concurrency limit. */
  concurrency: number;
  /** Each job's nominal run time; runs are drawn within ±20 % of it. */
  durationMs: number;
  timeoutSeconds?: number;
  priority?: number;
  retry?: Partial<RetrySettings>;
  /** Jobs due at the start (enqueued in bulk, then fetch-ready is woken once). */
  backlog?: number;
  /** Jobs enqueued one per call through the senders, at this rate for this long. */
  stream?: { perSecond: number; seconds: number };
  /** A schedule: one job at 0, then one every `periodSeconds`, `count` in all (enqueued like a stream's). */
  every?: { periodSeconds: number; count: number };
  /** The type's rate limit (issue 27): at most `limit` starts in any `perSeconds`. */
  rateLimit?: { limit: number; perSeconds: number };
  /**
   * The provider each run calls at its start (SES for notifications): it accepts at most `limit` calls in
   * any `perSeconds` and throttles the rest, failing the attempt (retried under the backoff rule).
   */
  provider?: { limit: number; perSeconds: number };
  /** An operator pauses the type at `atSeconds` and resumes it at `resumeAtSeconds` (virtual). */
  pause?: { atSeconds: number; resumeAtSeconds: number };
}

/** What goes wrong, drawn per job, call or event. */
export interface Faults {
  /** A run that throws (a failed attempt, retried under the type's backoff rule). */
  executorErrorRate: number;
  /** A run whose execution environment dies mid-run (the lease expires; fetch-ready's rescue). */
  executorKillRate: number;
  /** A job.ready event delivered twice. */
  duplicateDeliveryRate: number;
  /** A PutEvents send answered ThrottlingException (the SDK sends it again, 3 sends in all). */
  putEventsThrottleRate: number;
  /** An entry of an accepted PutEvents call failed (`InternalFailure`). */
  putEventsEntryFailureRate: number;
  /** A Data API call answered with a 5xx, which the SDK sends again (before or after it ran). */
  dataApiServerErrorRate: number;
}

export const NO_FAULTS: Faults = {
  executorErrorRate: 0,
  executorKillRate: 0,
  duplicateDeliveryRate: 0,
  putEventsThrottleRate: 0,
  putEventsEntryFailureRate: 0,
  dataApiServerErrorRate: 0,
};

export const EVERY_FAULT: Faults = {
  executorErrorRate: 0.02,
  executorKillRate: 0.002,
  duplicateDeliveryRate: 0.01,
  putEventsThrottleRate: 0.02,
  putEventsEntryFailureRate: 0.01,
  dataApiServerErrorRate: 0.005,
};

export interface Scenario {
  name: string;
  /** The single type's shape (issue 15's scenarios), or `types`. */
  backlog?: number;
  stream?: { perSecond: number; seconds: number };
  durationMs?: number;
  concurrency?: number;
  types?: TypeLoad[];
  /** Application containers enqueueing (and nudging), each with its own nudge window. Default 1. */
  senders?: number;
  faults?: Partial<Faults>;
  /** Types that are saturated on purpose (their pickup is not a target). */
  saturated?: string[];
}

export interface SimulationOptions {
  seed: number;
  /** `charged` (default): database time, latency tail, cold starts, the stack's concurrency; `legacy`: issue 15's model. */
  model?: 'charged' | 'legacy';
  /** Data API latency: the median (charged) or the constant (legacy). Default 20 ms. */
  dataApiLatencyMs?: number;
  /** Aurora capacity in ACU. Default 4, the stack's maximum (infra/jobs-stack.ts). */
  acu?: number;
  /** Aurora's commit (the write's quorum in storage). Default 2 ms. */
  commitMs?: number;
  /** Init phase of a new execution environment. Default 400 ms (charged), 0 (legacy). */
  coldStartMs?: number;
  /** Reserve each executor's concurrency (and fetch-ready's 2). Default false, the stack's default (legacy: true). */
  reserveConcurrency?: boolean;
  /** The account's concurrent executions. Default 1,000. */
  accountConcurrency?: number;
  /** Virtual latency of each PutEvents call. Default 20 ms. */
  putEventsLatencyMs?: number;
  /** From an event reaching Lambda's queue to its invocation starting. Default 50 ms. */
  deliveryMs?: number;
  /** Report the statements that cost the database most. */
  statements?: boolean;
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
  model: 'charged' | 'legacy';
  jobs: number;
  drainSeconds: number;
  idealSeconds: number;
  drainVsIdeal: number;
  attemptsPerJobMax: number;
  jobsFailedWithoutRun: number;
  attemptsBurned: number;
  /** Jobs not completed, failed or cancelled at the end (lost). */
  jobsNotFinal: number;
  jobsFailed: number;
  dlqEvents: number;
  overlappingAttempts: number;
  /** Runs at once of the first type (the single type of S1–S4, S6, S7). */
  maxConcurrentExecutions: number;
  concurrencyLimit: number;
  /** Types whose runs at once ever exceeded their limit. */
  typesOverLimit: string[];
  pickupP99Seconds: number;
  /** Each type's pickup p99 (seconds) and most runs at once against its limit. */
  byType: Record<
    string,
    {
      jobs: number;
      pickupP99Seconds: number;
      maxRunning: number;
      limit: number;
      maxStartsPerRateWindow?: number;
      rateLimit?: number;
      claimsWhilePaused?: number;
      resumeToStartSeconds?: number;
    }
  >;
  /** Provider calls throttled (a run over the provider's rate: a failed attempt). */
  providerThrottles: number;
  fetchReadyInvocations: number;
  fetchReadyPerSecondMax: number;
  dataApiCallsPerJob: number;
  putEventsCallsPerJob: number;
  costPerMillionJobsUsd: number;
  /** Virtual seconds of Aurora vCPU per job (statements' execution, scaled to the capacity). */
  dbSecondsPerJob: number;
  /** p99 of the claim statements' waits for their types' claim locks. */
  lockWaitP99Ms: number;
  /**
   * Share of slot claims that ran while another write of their type was committing (`DatabaseModel`):
   * how often PostgreSQL's row locks would have made a claim skip rows the model shows it committed.
   */
  claimsDuringAnothersCommit: number;
  coldStarts: number;
  /** Claims no executor began within their dispatch lease, handed back by fetch-ready. */
  handBacks: number;
  duplicatesDelivered: number;
  throttles: number;
  lambdaTimeouts: number;
  executorsKilled: number;
  dataApiResends: number;
  putEventsEntriesFailed: number;
  executorInvocations: number;
  virtualSeconds: number;
  /** The statements that cost the database most (charged model). */
  costliestStatements?: ReturnType<DatabaseModel['costliest']>;
}

/** The scenario's loads, issue 15's single-type shape included. */
export function typeLoads(scenario: Scenario): TypeLoad[] {
  if (scenario.types) return scenario.types;
  return [
    {
      type: 'sim-work',
      concurrency: scenario.concurrency ?? 1,
      durationMs: scenario.durationMs ?? 1000,
      backlog: scenario.backlog,
      stream: scenario.stream,
    },
  ];
}

/**
 * The six shipped types (shared/job-types/index.ts) with their limits, timeouts, retry rules and
 * schedules, for `seconds`: notifications saturated (40 a second of 1 s sends against a limit of 20),
 * approvals a steady 2 a second, valuation every 5 minutes, and the daily and hourly jobs once.
 */
export function mixedTypes(seconds: number): TypeLoad[] {
  const once = { periodSeconds: seconds, count: 1 };
  return [
    {
      type: 'notification',
      concurrency: 20,
      timeoutSeconds: 30,
      durationMs: 1000,
      stream: { perSecond: 40, seconds },
    },
    {
      type: 'approval-processing',
      concurrency: 10,
      timeoutSeconds: 60,
      durationMs: 2000,
      stream: { perSecond: 2, seconds },
    },
    {
      type: 'sync',
      concurrency: 1,
      timeoutSeconds: 60,
      durationMs: 20_000,
      retry: { maxAttempts: 4, backoffBaseSeconds: 30, backoffCapSeconds: 240 },
      every: { periodSeconds: 300, count: Math.max(1, Math.ceil(seconds / 300)) },
    },
    { type: 'interest-accrual', concurrency: 4, timeoutSeconds: 600, durationMs: 60_000, every: once },
    { type: 'payment-reminders', concurrency: 1, timeoutSeconds: 120, durationMs: 5000, every: once },
    {
      type: 'maintenance',
      concurrency: 1,
      timeoutSeconds: 300,
      durationMs: 30_000,
      priority: 100,
      every: once,
    },
  ];
}

/** `n` notifications due at once (a reminder sweep), at SES's default rate, 14 a second. */
export function rateLimitedNotifications(n: number): TypeLoad {
  const rate = { limit: 14, perSeconds: 1 };
  return {
    type: 'notification',
    concurrency: 20,
    timeoutSeconds: 30,
    durationMs: 200,
    backlog: n,
    rateLimit: rate,
    provider: rate,
  };
}

/**
 * `n` jobs of 1 s at a limit of 20, the type paused by an operator after a fifth of its drain and resumed
 * after another fifth and 10 s (so the resume falls between fetch-ready's minutes).
 */
export function pausedThenResumed(n: number): TypeLoad {
  const ideal = n / 20;
  return {
    type: 'sim-work',
    concurrency: 20,
    durationMs: 1000,
    backlog: n,
    pause: { atSeconds: Math.round(ideal / 5), resumeAtSeconds: Math.round((2 * ideal) / 5) + 10 },
  };
}

/** The scenarios, scaled (1 = full size). */
export function scenarios(scale = 1): Scenario[] {
  const n = (x: number) => Math.max(1, Math.round(x * scale));
  return [
    { name: 'S1 backlog', backlog: n(100_000), durationMs: 1000, concurrency: 50 },
    { name: 'S2 overload', backlog: n(10_000), durationMs: 10_000, concurrency: 5 },
    { name: 'S3 steady', stream: { perSecond: 50, seconds: n(600) }, durationMs: 200, concurrency: 20 },
    { name: 'S4 nudge storm', stream: { perSecond: 100, seconds: n(120) }, durationMs: 100, concurrency: 20 },
    { name: 'S5 mixed', types: mixedTypes(n(600)), senders: 4, saturated: ['notification'] },
    { name: 'S6 sparse', stream: { perSecond: 0.2, seconds: n(600) }, durationMs: 200, concurrency: 20 },
    {
      // Issue 27: a reminder sweep's notifications at SES's default rate, 14 a second, against a provider
      // that throttles above it.
      name: 'S8 rate-limited notifications',
      types: [rateLimitedNotifications(n(10_000))],
    },
    { name: 'S9 pause and resume', types: [pausedThenResumed(n(6_000))] },
    {
      name: 'S7 faults',
      stream: { perSecond: 50, seconds: n(600) },
      durationMs: 200,
      concurrency: 20,
      senders: 4,
      faults: EVERY_FAULT,
    },
  ];
}

/** The slowest type's planned work at its concurrency (ms): the jobs it will enqueue × duration / limit. */
export function plannedWorkMs(loads: readonly TypeLoad[]): number {
  return Math.max(
    0,
    ...loads.map((l) => {
      const jobs =
        (l.backlog ?? 0) + (l.stream ? l.stream.perSecond * l.stream.seconds : 0) + (l.every?.count ?? 0);
      return (jobs * l.durationMs) / l.concurrency;
    }),
  );
}
