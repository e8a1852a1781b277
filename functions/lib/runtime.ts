import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { createEnqueuedNudge, createEventBridgePublisher } from '../../shared/aws/eventbridge-publisher.js';
import { createPowertoolsJobMetrics } from '../../shared/aws/powertools-metrics.js';
import { dataApiDatabaseFromEnv } from '../../shared/db/data-api-driver.js';
import type { Database } from '../../shared/db/port.js';
import { createJobTypeRegistry, type JobServices, type SeedRegistry } from '../../shared/job-types/index.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import type { JobPublisher } from '../../shared/jobs/fan-out.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import type { Observability } from './powertools.js';

export type SeedDispatcher = JobDispatcher<SeedRegistry['schemas'], JobServices>;
export type SeedTracker = JobTracker<SeedRegistry['schemas'], JobServices>;

/** Everything a handler needs; tests build it over a real PostgreSQL, Lambda builds it from the environment. */
export interface JobRuntime {
  db: Database;
  registry: SeedRegistry;
  tracker: SeedTracker;
}

export function required(env: NodeJS.ProcessEnv, name: string): string {
  const v = env[name];
  if (!v) throw new Error(`environment variable ${name} is not set`);
  return v;
}

/** The database (RDS Data API), registry and tracker, with metrics going to CloudWatch. */
export function runtimeFromEnv(o: Observability, env: NodeJS.ProcessEnv = process.env): JobRuntime {
  const db = dataApiDatabaseFromEnv(env);
  const registry = createJobTypeRegistry();
  const tracker = new JobTracker({ db, registry, metrics: createPowertoolsJobMetrics(o.metrics) });
  return { db, registry, tracker };
}

let eventBridge: EventBridgeClient | undefined;

export function publisherFromEnv(env: NodeJS.ProcessEnv = process.env): JobPublisher {
  eventBridge ??= new EventBridgeClient({});
  return createEventBridgePublisher({ busName: required(env, 'JOBS_BUS_NAME'), client: eventBridge });
}

/** Wakes fetch-ready at once (a `jobs.enqueued` event on the jobs bus) instead of at its next minute. */
export function nudgeFromEnv(env: NodeJS.ProcessEnv = process.env): () => Promise<void> {
  eventBridge ??= new EventBridgeClient({});
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

export function dispatcherFor(runtime: JobRuntime, services: JobServices): SeedDispatcher {
  return new JobDispatcher(runtime.registry, services);
}
