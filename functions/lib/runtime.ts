import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { createEventBridgePublisher } from '../../shared/aws/eventbridge-publisher.js';
import type { JobPublisher } from '../../shared/aws/fetch-ready.js';
import { createPowertoolsJobMetrics } from '../../shared/aws/powertools-metrics.js';
import { defaultTypeConcurrency } from '../../shared/aws/type-limits.js';
import { createEnqueuedNudge, FetchReadyWaker, type WakeErrorReporter } from '../../shared/aws/waker.js';
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

/** Everything a handler needs; tests build it over a real PostgreSQL, Lambda builds it from the environment. */
export interface JobRuntime {
  db: Database;
  registry: LendingRegistry;
  tracker: LendingTracker;
  /** The function's Powertools utilities, when built from the environment: AWS clients are traced with them. */
  o?: Observability;
  /**
   * The function's one EventBridge client, built (traced) with the runtime: the publisher, the waker and
   * the chain all send through it. Absent in a runtime that publishes nothing.
   */
  eventBridge?: EventBridgeClient;
}

export function required(env: NodeJS.ProcessEnv, name: string): string {
  const v = env[name];
  if (!v) throw new Error(`environment variable ${name} is not set`);
  return v;
}

/** The database (RDS Data API), registry, tracker and EventBridge client, with metrics going to CloudWatch. */
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
  return { db, registry, tracker, o, eventBridge: traceClient(o, new EventBridgeClient({})) };
}

/** The jobs bus and the runtime's client to it. */
function bus(runtime: JobRuntime, env: NodeJS.ProcessEnv): { busName: string; client: EventBridgeClient } {
  if (!runtime.eventBridge) throw new Error('this runtime has no EventBridge client');
  return { busName: required(env, 'JOBS_BUS_NAME'), client: runtime.eventBridge };
}

export function publisherFromEnv(runtime: JobRuntime, env: NodeJS.ProcessEnv = process.env): JobPublisher {
  return createEventBridgePublisher(bus(runtime, env));
}

/** Wakes fetch-ready at once (a `jobs.enqueued` event on the jobs bus) instead of at its next minute. */
export function wakerFromEnv(
  runtime: JobRuntime,
  onError: WakeErrorReporter,
  env: NodeJS.ProcessEnv = process.env,
): FetchReadyWaker {
  return FetchReadyWaker.forBus({ ...bus(runtime, env), onError });
}

/** Starts one more fetch-ready run at once: a `jobs.enqueued` event that no window holds back. */
export function chainFromEnv(runtime: JobRuntime, env: NodeJS.ProcessEnv = process.env): () => Promise<void> {
  return createEnqueuedNudge({ ...bus(runtime, env), windowMs: 0, reason: 'continue' });
}

export function dispatcherFor(runtime: JobRuntime, services: JobServices): LendingDispatcher {
  return new JobDispatcher(runtime.registry, services);
}
