import type { Context } from 'aws-lambda';
import * as z from 'zod';
import { JOB_EVENT_DETAIL_TYPE, JOB_EVENT_SOURCE } from '../../shared/aws/eventbridge-publisher.js';
import { runDeliveredAttempt } from '../../shared/jobs/run-attempt.js';
import { FollowUpNudge } from '../lib/follow-up-nudge.js';
import { createObservability, type Observability, withObservability } from '../lib/powertools.js';
import {
  dispatcherFor,
  type JobRuntime,
  nudgeFromEnv,
  runtimeFromEnv,
  type SeedDispatcher,
} from '../lib/runtime.js';
import { servicesFromEnv } from '../lib/services.js';

/** The EventBridge event fetch-ready publishes for one attempt. */
export const jobReadyEventSchema = z.object({
  source: z.literal(JOB_EVENT_SOURCE),
  'detail-type': z.literal(JOB_EVENT_DETAIL_TYPE),
  detail: z.object({
    jobId: z.uuid(),
    jobType: z.string().min(1),
    attempt: z.number().int().min(1),
    payload: z.unknown(),
  }),
});

export type ExecutorOutcome = 'completed' | 'retrying' | 'failed' | 'fenced_out' | 'duplicate';

/**
 * One executor function per job type (the rule routes by `detail.jobType`). It starts the attempt (a
 * duplicate delivery, or an attempt the table has moved past, stops here), runs the type's executor through
 * the dispatcher, and records the result fenced by the attempt number. Lambda's own retries are off: the
 * job table owns retries. A malformed event, or one for another type, is logged and thrown without
 * touching the table, so the function's on-failure destination (a dead-letter queue) keeps it.
 */
export function createExecutorHandler(deps: {
  runtime: JobRuntime;
  dispatcher: SeedDispatcher;
  jobType: string;
  o: Observability;
  /** Wakes fetch-ready after a run that enqueued due follow-ups (types that declare `enqueues`). */
  followUps?: FollowUpNudge;
}) {
  return async (event: unknown, _context?: Context): Promise<{ outcome: ExecutorOutcome }> => {
    const parsed = jobReadyEventSchema.safeParse(event);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
      deps.o.logger.error('rejected a malformed job event; nothing written', { issues });
      throw new Error(`malformed job event: ${issues.join('; ')}`);
    }
    const { jobId, jobType, attempt } = parsed.data.detail;
    if (jobType !== deps.jobType) {
      deps.o.logger.error('rejected an event for another job type; nothing written', {
        jobId,
        jobType,
        expected: deps.jobType,
      });
      throw new Error(`this executor runs ${deps.jobType} jobs, not ${jobType}`);
    }
    deps.o.logger.appendKeys({ jobId, jobType, attempt });
    const recorded = await runDeliveredAttempt(deps.runtime.tracker, deps.dispatcher, { id: jobId, attempt });
    // After the run: its transactions (and the follow-ups they enqueued) have committed.
    if (
      await deps.followUps?.afterRun((err) =>
        deps.o.logger.warn('could not nudge fetch-ready', { error: String(err) }),
      )
    )
      deps.o.logger.info('follow-up jobs enqueued: fetch-ready nudged');
    if (recorded.recorded === 'duplicate') {
      deps.o.logger.info('duplicate or stale delivery ignored');
      return { outcome: 'duplicate' };
    }
    const r = recorded.result;
    if (r.outcome === 'failed')
      deps.o.logger.warn('attempt failed', {
        error: r.error,
        permanent: r.permanent,
        recorded: recorded.recorded,
      });
    else
      deps.o.logger.info('attempt finished', {
        outcome: r.outcome,
        recorded: recorded.recorded,
        durationMs: Math.round(r.durationMs),
      });
    return { outcome: recorded.recorded };
  };
}

const o = createObservability(`executor-${process.env.JOB_TYPE ?? 'unknown'}`);
let lazy: ReturnType<typeof createExecutorHandler> | undefined;
export const handler = withObservability((event: unknown, context: Context) => {
  if (!lazy) {
    const runtime = runtimeFromEnv(o);
    const jobType = process.env.JOB_TYPE;
    if (!jobType) throw new Error('environment variable JOB_TYPE is not set');
    const followUps = runtime.registry.require(jobType).enqueues.length
      ? new FollowUpNudge(runtime.tracker, nudgeFromEnv())
      : undefined;
    lazy = createExecutorHandler({
      runtime,
      dispatcher: dispatcherFor(runtime, servicesFromEnv(runtime, process.env, followUps?.tracker)),
      jobType,
      o,
      followUps,
    });
  }
  return lazy(event, context);
}, o);
