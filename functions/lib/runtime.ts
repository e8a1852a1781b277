import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { createEnqueuedNudge, createEventBridgePublisher } from '../../shared/aws/eventbridge-publisher.js';
import type { JobPublisher } from '../../shared/aws/fetch-ready.js';
import { createPowertoolsJobMetrics } from '../../shared/aws/powertools-metrics.js';
import { defaultTypeConcurrency } from '../../shared/aws/type-limits.js';
import { createDataApiClient, dataApiDatabaseFromEnv } from '../../shared/db/data-api-driver.js';
import type { Database } from '../../shared/db/port.js';
import {
  createJobTypeRegistry,
  type JobServices,
  type LendingRegistry,
  type LendingTracker,
} from '../../shared/job-types/index.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { RATE_LIMITS_VARIABLE, rateLimitsFromText } from '../../shared/jobs/registry.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import type { Observability } from './powertools.js';
import { traceClient } from './tracing.js';

export { defaultTypeConcurrency };

export type LendingDispatcher = JobDispatcher<LendingRegistry['schemas'], JobServices>;
/** @deprecated The former name, kept while bench/simulate moves to `LendingDispatcher`. */
export type SeedDispatcher = LendingDispatcher;

/** Everything a handler needs; tests build it over a real PostgreSQL, Lambda builds it from the environment. */
export interface JobRuntime {
  db: Database;
  registry: LendingRegistry;
  tracker: LendingTracker;
  /** The function's Powertools utilities, when built from the environment: AWS clients are traced with them. */
  o?: Observability;
}

export function required(env: NodeJS.ProcessEnv, name: string): string {
  const v = env[name];
  if (!v) throw new Error(`environment variable ${name} is not set`);
  return v;
}

/** The database (RDS Data API), registry and tracker, with metrics going to CloudWatch. */
export function runtimeFromEnv(o: Observability, env: NodeJS.ProcessEnv = process.env): JobRuntime {
  // The client is created here (traced); DATA_API_ENDPOINT points it at the local fixture in tests.
  const client = createDataApiClient(env.DATA_API_ENDPOINT ? { endpoint: env.DATA_API_ENDPOINT } : {});
  const db = dataApiDatabaseFromEnv(env, traceClient(o, client));
  const registry = createJobTypeRegistry();
  const tracker = new JobTracker({
    db,
    registry,
    metrics: createPowertoolsJobMetrics(o.metrics),
    defaultConcurrency: defaultTypeConcurrency(env),
    // The stack's rate limits (e.g. the account's SES quota) replace the types' own, in every claim.
    rateLimitOverrides: rateLimitsFromText(env[RATE_LIMITS_VARIABLE]),
  });
  // The EventBridge client publisherFromEnv/nudgeFromEnv hand out is created here, traced.
  eventBridgeClient(o);
  return { db, registry, tracker, o };
}

let eventBridge: EventBridgeClient | undefined;

/**
 * One EventBridge client per execution environment, traced with the first `o` given (runtimeFromEnv
 * gives it, and every handler builds its runtime before its publisher or nudge).
 */
function eventBridgeClient(o?: Observability): EventBridgeClient {
  eventBridge ??= o ? traceClient(o, new EventBridgeClient({})) : new EventBridgeClient({});
  return eventBridge;
}

export function publisherFromEnv(env: NodeJS.ProcessEnv = process.env, o?: Observability): JobPublisher {
  eventBridgeClient(o);
  return createEventBridgePublisher({ busName: required(env, 'JOBS_BUS_NAME'), client: eventBridge });
}

/** Wakes fetch-ready at once (a `jobs.enqueued` event on the jobs bus) instead of at its next minute. */
export function nudgeFromEnv(env: NodeJS.ProcessEnv = process.env, o?: Observability): () => Promise<void> {
  eventBridgeClient(o);
  return createEnqueuedNudge({ busName: required(env, 'JOBS_BUS_NAME'), client: eventBridge });
}

/** Starts one more fetch-ready run at once: a `jobs.enqueued` event that no window holds back. */
export function chainFromEnv(env: NodeJS.ProcessEnv = process.env): () => Promise<void> {
  eventBridge ??= new EventBridgeClient({});
  return createEnqueuedNudge({
    busName: required(env, 'JOBS_BUS_NAME'),
    client: eventBridge,
    windowMs: 0,
    reason: 'continue',
  });
}

export function dispatcherFor(runtime: JobRuntime, services: JobServices): LendingDispatcher {
  return new JobDispatcher(runtime.registry, services);
}
