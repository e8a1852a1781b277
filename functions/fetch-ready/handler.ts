import type { Context } from 'aws-lambda';
import { z } from 'zod';
import { type FanOutResult, fanOutDueJobs, type JobPublisher } from '../../shared/jobs/fan-out.js';
import { createObservability, type Observability, withObservability } from '../lib/powertools.js';
import { type JobRuntime, publisherFromEnv, runtimeFromEnv } from '../lib/runtime.js';

/**
 * Invoked every minute by an EventBridge schedule (and on demand): claims due jobs through the Data API
 * and fans them out, one event per job, to the per-type executors. The event itself carries nothing the
 * handler needs; anything object-shaped is accepted (a scheduled event, or `{}` from a manual invoke).
 */
const fetchReadyEvent = z.looseObject({});

/** A claim's response must stay under the Data API's 1 MiB: 25 jobs × 32 KiB payloads at most. */
export const DEFAULT_CLAIM_BATCH = 25;

export function createFetchReadyHandler(deps: {
  runtime: JobRuntime;
  publisher: JobPublisher;
  o: Observability;
  batchSize?: number;
}) {
  return async (event: unknown, _context?: Context): Promise<FanOutResult> => {
    const parsed = fetchReadyEvent.safeParse(event);
    if (!parsed.success) {
      deps.o.logger.error('rejected a malformed fetch-ready event', { issues: parsed.error.issues });
      throw new Error('malformed fetch-ready event');
    }
    const result = await fanOutDueJobs(deps.runtime.tracker, deps.publisher, {
      batchSize: deps.batchSize ?? DEFAULT_CLAIM_BATCH,
    });
    deps.o.logger.info('fetch-ready', {
      claimed: result.claimed,
      published: result.published,
      released: result.released,
      rescued: result.rescued.length,
      queueDepth: result.queue.depth,
      oldestReadyAgeSeconds: result.queue.oldestReadyAgeSeconds,
    });
    return result;
  };
}

const o = createObservability('fetch-ready');
let lazy: ReturnType<typeof createFetchReadyHandler> | undefined;
/** The Lambda entry point: dependencies built once per execution environment. */
export const handler = withObservability((event: unknown, context: Context) => {
  lazy ??= createFetchReadyHandler({
    runtime: runtimeFromEnv(o),
    publisher: publisherFromEnv(),
    o,
    batchSize: process.env.CLAIM_BATCH_SIZE ? Number(process.env.CLAIM_BATCH_SIZE) : undefined,
  });
  return lazy(event, context);
}, o);
