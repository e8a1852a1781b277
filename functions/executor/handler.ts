import type { Context } from 'aws-lambda';
import * as z from 'zod';
import { JOB_EVENT_DETAIL_TYPE, JOB_EVENT_SOURCE } from '../../shared/aws/eventbridge-publisher.js';
import { handOverSlot } from '../../shared/aws/fetch-ready.js';
import { FollowUpNudge } from '../../shared/aws/follow-ups.js';
import type { ClaimedJob } from '../../shared/jobs/model.js';
import { type RecordedAttempt, recordResult } from '../../shared/jobs/record-result.js';
import { DEFAULT_TIMEOUT_SECONDS, DISPATCH_LEASE_SECONDS } from '../../shared/jobs/registry.js';
import { createObservability, type Observability, withObservability } from '../lib/powertools.js';
import {
  dispatcherFor,
  type JobRuntime,
  type LendingDispatcher,
  nudgeFromEnv,
  publisherFromEnv,
  runtimeFromEnv,
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

/** A job an invocation claimed for itself is begun (its lease renewed) this long before its dispatch lease ends. */
const BEGIN_BEFORE_LEASE_ENDS_MS = 30_000;

/** Time kept beyond a job's own timeout before an invocation takes another job: reporting it, and margin. */
export const NEXT_JOB_MARGIN_SECONDS = 30;

/**
 * One executor function per job type (the rule routes by `detail.jobType`). It starts the attempt (a
 * duplicate delivery, or an attempt the table has moved past, stops here), runs the type's executor through
 * the dispatcher, and records the result fenced by the attempt number. Lambda's own retries are off: the
 * job table owns retries. A malformed event, or one for another type, is logged and thrown without
 * touching the table, so the function's on-failure destination (a dead-letter queue) keeps it.
 *
 * Then, while the invocation has time left for a whole attempt, it claims its type's next due job (within
 * the type's concurrency limit, in the statement that reports the last one) and runs it too: a slot that
 * frees is refilled without waiting for fetch-ready and an event per job, one statement per job.
 */
export function createExecutorHandler(deps: {
  runtime: JobRuntime;
  dispatcher: LendingDispatcher;
  jobType: string;
  o: Observability;
  /** Wakes fetch-ready after a run that enqueued due follow-ups (types that declare `enqueues`). */
  followUps?: FollowUpNudge;
  /**
   * Called when the invocation stops taking jobs for lack of time, so its slot is refilled at once instead
   * of at fetch-ready's next minute: on AWS it publishes the type's next due job (`handOverSlot`).
   */
  handOver?: () => Promise<unknown>;
}) {
  const runtime = deps.runtime;
  const timeoutSeconds = runtime.registry.get(deps.jobType)?.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
  const attemptBudgetMs = (timeoutSeconds + NEXT_JOB_MARGIN_SECONDS) * 1000;

  const logResult = (recorded: RecordedAttempt) => {
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
  };
  const nudgeFollowUps = async () => {
    // After a run: its transactions (and the follow-ups they enqueued) have committed.
    if (
      await deps.followUps?.afterRun((err) =>
        deps.o.logger.warn('could not nudge fetch-ready', { error: String(err) }),
      )
    )
      deps.o.logger.info('follow-up jobs enqueued: fetch-ready nudged');
  };

  /**
   * Runs `job` and, while a whole attempt still fits in the invocation, this type's next due jobs: a
   * completion and the next claim go in one statement. Returns the first run's record and how many more ran.
   */
  const runFrom = async (
    first: ClaimedJob | null,
    context: Context | undefined,
  ): Promise<{ firstRecorded: RecordedAttempt | null; nextJobsRun: number }> => {
    const timeForAnother = () =>
      context !== undefined && context.getRemainingTimeInMillis() > attemptBudgetMs;
    // A job this invocation claimed for itself (no event) holds a dispatch lease and runs at once: no
    // statement to begin it. If the run outlasts most of the lease, the executor begins it then, which
    // renews the lease to the run's. An invocation that dies before that frees the slot within the
    // dispatch lease and the claim goes back uncounted (bounded by MAX_HANDBACKS, so a job that kills its
    // executor every time still ends).
    const claimNext = async () => (await runtime.tracker.fetchReady(1, { jobType: deps.jobType }))[0] ?? null;
    const beginIfLong = (job: ClaimedJob): NodeJS.Timeout | undefined => {
      const leaseLeftMs = (job.leaseExpiresAt?.getTime() ?? Date.now()) - Date.now();
      const timer = setTimeout(
        () => {
          void runtime.tracker.startAttempt(job.id, job.attempts).then(
            (begun) => {
              if (!begun)
                deps.o.logger.error('could not renew the lease of a running job', { jobId: job.id });
            },
            (err: unknown) =>
              deps.o.logger.error('could not renew the lease of a running job', {
                jobId: job.id,
                error: String(err),
              }),
          );
        },
        Math.max(0, Math.min(leaseLeftMs, DISPATCH_LEASE_SECONDS * 1000) - BEGIN_BEFORE_LEASE_ENDS_MS),
      );
      timer.unref?.();
      return timer;
    };
    let firstRecorded: RecordedAttempt | null = null;
    let nextJobsRun = 0;
    // A duplicate or late delivery runs nothing of its own, but the invocation may still take due work.
    let current = first ?? (timeForAnother() ? await claimNext() : null);
    let isFirst = first !== null;
    while (current) {
      const job = current;
      if (!isFirst) deps.o.logger.appendKeys({ jobId: job.id, jobType: job.jobType, attempt: job.attempts });
      const renewal = isFirst ? undefined : beginIfLong(job);
      const result = await deps.dispatcher.dispatch(job).finally(() => clearTimeout(renewal));
      let recorded: RecordedAttempt;
      current = null;
      if (result.outcome === 'completed' && timeForAnother()) {
        const r = await runtime.tracker.completeAndClaimNext(
          { id: job.id, attempt: job.attempts, durationMs: result.durationMs },
          deps.jobType,
        );
        recorded = r.completed ? { recorded: 'completed', result } : { recorded: 'fenced_out', result };
        current = r.next;
      } else {
        recorded = await recordResult(runtime.tracker, job, result);
        if (timeForAnother()) current = await claimNext();
        else if (context && deps.handOver) {
          // Out of time, perhaps not of work: another invocation takes the slot now.
          await deps
            .handOver()
            .catch((err: unknown) =>
              deps.o.logger.warn('could not hand the slot back to fetch-ready', { error: String(err) }),
            );
        }
      }
      await nudgeFollowUps();
      logResult(recorded);
      if (isFirst) firstRecorded = recorded;
      else nextJobsRun++;
      isFirst = false;
    }
    return { firstRecorded, nextJobsRun };
  };

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
    const job = await runtime.tracker.startAttempt(jobId, attempt);
    if (!job) deps.o.logger.info('duplicate, stale or late delivery ignored');
    const { firstRecorded, nextJobsRun } = await runFrom(job, context);
    const outcome: ExecutorOutcome = firstRecorded?.recorded ?? 'duplicate';
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
      ? new FollowUpNudge(runtime.tracker, nudgeFromEnv())
      : undefined;
    lazy = createExecutorHandler({
      runtime,
      dispatcher: dispatcherFor(runtime, servicesFromEnv(runtime, process.env, followUps?.tracker)),
      jobType,
      o,
      followUps,
      handOver: () => handOverSlot(runtime.tracker, publisherFromEnv(), jobType),
    });
  }
  return lazy(event, context);
}, o);
