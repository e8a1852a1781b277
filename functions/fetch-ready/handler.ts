import type { Context } from 'aws-lambda';
import * as z from 'zod';
import {
  DEFAULT_CLAIM_BATCH,
  type FanOutResult,
  fanOutDueJobs,
  type JobPublisher,
} from '../../shared/jobs/fan-out.js';
import { createObservability, type Observability, withObservability } from '../lib/powertools.js';
import { type JobRuntime, publisherFromEnv, runtimeFromEnv } from '../lib/runtime.js';

/**
 * Invoked every minute by an EventBridge schedule, and at once by a `jobs.enqueued` nudge on the jobs bus
 * (or a manual invoke): claims due jobs through the Data API and fans them out, one event per job, to the
 * per-type executors. The event carries nothing the handler needs; anything object-shaped is accepted.
 */
const fetchReadyEvent = z.looseObject({});

/** A further claim starts only with this much time left: a claim plus its publishing fits well inside. */
const MIN_REMAINING_MS_FOR_A_CLAIM = 20_000;

export function createFetchReadyHandler(deps: {
  runtime: JobRuntime;
  publisher: JobPublisher;
  o: Observability;
  batchSize?: number;
  /** Claims per invocation while claims come back full. Default 1. */
  maxClaims?: number;
}) {
  return async (event: unknown, context?: Context): Promise<FanOutResult> => {
    const parsed = fetchReadyEvent.safeParse(event);
    if (!parsed.success) {
      deps.o.logger.error('rejected a malformed fetch-ready event', { issues: parsed.error.issues });
      throw new Error('malformed fetch-ready event');
    }
    const result = await fanOutDueJobs(deps.runtime.tracker, deps.publisher, {
      batchSize: deps.batchSize ?? DEFAULT_CLAIM_BATCH,
      maxClaims: deps.maxClaims ?? 1,
      shouldContinue: () =>
        context === undefined || context.getRemainingTimeInMillis() > MIN_REMAINING_MS_FOR_A_CLAIM,
    });
    if (result.unpublished.length > 0) {
      deps.o.logger.warn('events not published; their jobs were released', {
        unpublished: result.unpublished.slice(0, 20),
      });
    }
    deps.o.logger.info('fetch-ready', {
      claimed: result.claimed,
      published: result.published,
      released: result.released,
      publishCalls: result.publishCalls,
      rescued: result.rescued.length,
      queueDepth: result.queue.depth,
      oldestReadyAgeSeconds: result.queue.oldestReadyAgeSeconds,
    });
    return result;
  };
}

function positiveInt(name: string, value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer (got "${value}")`);
  return n;
}

const o = createObservability('fetch-ready');
let lazy: ReturnType<typeof createFetchReadyHandler> | undefined;
/** The Lambda entry point: dependencies built once per execution environment. */
export const handler = withObservability((event: unknown, context: Context) => {
  lazy ??= createFetchReadyHandler({
    runtime: runtimeFromEnv(o),
    publisher: publisherFromEnv(),
    o,
    batchSize: positiveInt('CLAIM_BATCH_SIZE', process.env.CLAIM_BATCH_SIZE),
    maxClaims: positiveInt('MAX_CLAIMS_PER_RUN', process.env.MAX_CLAIMS_PER_RUN),
  });
  return lazy(event, context);
}, o);
