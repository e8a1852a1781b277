import type { Context } from 'aws-lambda';
import * as z from 'zod';
import { JOB_EVENT_DETAIL_TYPE, JOB_EVENT_SOURCE } from '../../shared/aws/eventbridge-publisher.js';
import { AwsExecutor, type ExecutorOutcome } from '../../shared/aws/executor.js';
import type { JobPublisher } from '../../shared/aws/fetch-ready.js';
import { FollowUpNudge } from '../../shared/aws/follow-ups.js';
import { createObservability, type Observability, withObservability } from '../lib/powertools.js';
import {
  dispatcherFor,
  type JobRuntime,
  type LendingDispatcher,
  publisherFromEnv,
  runtimeFromEnv,
  wakerFromEnv,
} from '../lib/runtime.js';
import { servicesFromEnv } from '../lib/services.js';

export type { ExecutorOutcome };

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

/**
 * One executor function per job type (the rule routes by `detail.jobType`): it checks the event and runs
 * the AWS runtime's executor loop (`shared/aws/executor.ts`) for it. Lambda's own retries are off: the job
 * table owns retries. A malformed event, or one for another type, is logged and thrown without touching
 * the table, so the function's on-failure destination (a dead-letter queue) keeps it.
 */
export function createExecutorHandler(deps: {
  runtime: JobRuntime;
  dispatcher: LendingDispatcher;
  jobType: string;
  o: Observability;
  /** Wakes fetch-ready after a run that enqueued due follow-ups (types that declare `enqueues`). */
  followUps?: FollowUpNudge;
  /** Where an invocation out of time for another job hands its slot (see `AwsExecutorOptions`). */
  publisher?: JobPublisher;
}) {
  const executor = new AwsExecutor({
    tracker: deps.runtime.tracker,
    dispatcher: deps.dispatcher,
    jobType: deps.jobType,
    log: deps.o.logger,
    followUps: deps.followUps,
    publisher: deps.publisher,
  });
  return async (
    event: unknown,
    context?: Context,
  ): Promise<{ outcome: ExecutorOutcome; nextJobsRun?: number }> => {
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
    const { outcome, nextJobsRun } = await executor.run(
      { jobId, attempt },
      context ? () => context.getRemainingTimeInMillis() : undefined,
    );
    return context ? { outcome, nextJobsRun } : { outcome };
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
      ? new FollowUpNudge(
          runtime.tracker,
          wakerFromEnv(runtime, (err) =>
            o.logger.warn('could not nudge fetch-ready', { error: String(err) }),
          ),
        )
      : undefined;
    lazy = createExecutorHandler({
      runtime,
      dispatcher: dispatcherFor(runtime, servicesFromEnv(runtime, jobType, process.env, followUps?.tracker)),
      jobType,
      o,
      followUps,
      publisher: publisherFromEnv(runtime),
    });
  }
  return lazy(event, context);
}, o);
