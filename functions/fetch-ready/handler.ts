import type { Context } from 'aws-lambda';
import * as z from 'zod';
import {
  DEFAULT_CLAIM_BATCH,
  type FanOutResult,
  fanOutDueJobs,
  type JobPublisher,
} from '../../shared/aws/fetch-ready.js';
import { JOBS_ENQUEUED_DETAIL_TYPE } from '../../shared/aws/waker.js';
import { createObservability, type Observability, withObservability } from '../lib/powertools.js';
import { chainFromEnv, type JobRuntime, publisherFromEnv, runtimeFromEnv } from '../lib/runtime.js';

/**
 * Invoked every minute by an EventBridge schedule, at once by a `jobs.enqueued` nudge on the jobs bus (an
 * enqueue, an executor's follow-ups, or a run of its own that stopped with work left), or by a manual
 * invoke: claims due jobs through the Data API and fans them out, one event per job, to the per-type
 * executors. Only a nudge's detail matters (its window, to claim once more at its end); anything
 * object-shaped is accepted.
 */
const fetchReadyEvent = z.looseObject({
  'detail-type': z.string().optional(),
  detail: z.unknown().optional(),
});
const nudgeDetail = z.looseObject({
  sentAt: z.iso.datetime({ offset: true }).optional(),
  windowMs: z.number().int().min(0).max(60_000).optional(),
});

/** A further claim starts only with this much time left: a claim plus its publishing fits well inside. */
const MIN_REMAINING_MS_FOR_A_CLAIM = 20_000;
/** Allowance for the sender's and this function's clocks disagreeing, added to a nudge's window. */
const NUDGE_CLOCK_MARGIN_MS = 50;

/** When a run woken by this event should claim once more: the end of its sender's nudge window. */
export function lingerUntil(event: z.infer<typeof fetchReadyEvent>, nowMs: number): number | undefined {
  if (event['detail-type'] !== JOBS_ENQUEUED_DETAIL_TYPE) return undefined;
  const detail = nudgeDetail.safeParse(event.detail ?? {});
  if (!detail.success || !detail.data.sentAt || !detail.data.windowMs) return undefined;
  const end = Date.parse(detail.data.sentAt) + detail.data.windowMs + NUDGE_CLOCK_MARGIN_MS;
  // Never longer than one window from now, whatever the sender's clock says.
  return Math.min(end, nowMs + detail.data.windowMs + NUDGE_CLOCK_MARGIN_MS);
}

export function createFetchReadyHandler(deps: {
  runtime: JobRuntime;
  publisher: JobPublisher;
  o: Observability;
  batchSize?: number;
  /** Claims per invocation at most (the time budget normally ends a run first). */
  maxClaims?: number;
  /** Starts one more run at once, for a run that stops with work left. */
  chain?: () => Promise<void>;
  /** The clock and the wait of a run that lingers for its nudge's window (the simulator's are virtual). */
  nowMs?: () => number;
  sleep?: (ms: number) => Promise<void>;
}) {
  const nowMs = deps.nowMs ?? Date.now;
  return async (event: unknown, context?: Context): Promise<FanOutResult> => {
    const parsed = fetchReadyEvent.safeParse(event);
    if (!parsed.success) {
      deps.o.logger.error('rejected a malformed fetch-ready event', { issues: parsed.error.issues });
      throw new Error('malformed fetch-ready event');
    }
    const { registry } = deps.runtime;
    const result = await fanOutDueJobs(deps.runtime.tracker, deps.publisher, {
      batchSize: deps.batchSize ?? DEFAULT_CLAIM_BATCH,
      maxClaims: deps.maxClaims,
      shouldContinue: () =>
        context === undefined || context.getRemainingTimeInMillis() > MIN_REMAINING_MS_FOR_A_CLAIM,
      hasExecutor: (jobType) => registry.get(jobType) !== undefined,
      lingerUntilMs: lingerUntil(parsed.data, nowMs()),
      // The schedule's run, once a minute, reports the minute's activity (not the nudged runs between).
      reportActivity: parsed.data['detail-type'] === 'Scheduled Event',
      nowMs,
      sleep: deps.sleep,
      chain: deps.chain
        ? async () => {
            try {
              await deps.chain!();
            } catch (error) {
              // The next minute's run takes the rest.
              deps.o.logger.warn('could not start a follow-on fetch-ready run', { error: String(error) });
            }
          }
        : undefined,
    });
    if (result.unpublished.length > 0) {
      deps.o.logger.warn('events not published; their jobs were released', {
        unpublished: result.unpublished.slice(0, 20),
      });
    }
    if (result.noExecutor.length > 0) {
      deps.o.logger.error('jobs of a type with no executor here failed permanently', {
        jobs: result.noExecutor.slice(0, 20),
      });
    }
    deps.o.logger.info('fetch-ready', {
      claimed: result.claimed,
      claims: result.claims,
      published: result.published,
      released: result.released,
      publishCalls: result.publishCalls,
      rescued: result.rescued.length,
      handedBack: result.handedBack,
      chained: result.chained,
      queueDepth: result.queue.depth,
      oldestReadyAgeSeconds: result.queue.oldestReadyAgeSeconds,
      ...(result.activity ?? {}),
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
  if (!lazy) {
    const runtime = runtimeFromEnv(o);
    lazy = createFetchReadyHandler({
      runtime,
      publisher: publisherFromEnv(runtime),
      o,
      batchSize: positiveInt('CLAIM_BATCH_SIZE', process.env.CLAIM_BATCH_SIZE),
      maxClaims: positiveInt('MAX_CLAIMS_PER_RUN', process.env.MAX_CLAIMS_PER_RUN),
      chain: chainFromEnv(runtime),
    });
  }
  return lazy(event, context);
}, o);
