import type { DispatchOptions, JobDispatcher, JobResult } from './dispatcher.js';
import type { ClaimedJob } from './model.js';
import type { JobTypeMap } from './registry.js';
import type { FailResult, JobTracker } from './tracker.js';

export type RecordedAttempt =
  | { recorded: 'completed'; result: JobResult }
  | { recorded: 'retrying' | 'failed'; result: JobResult; failure: FailResult }
  /** The attempt was no longer current when its result came in (lease expired, cancelled): nothing changed. */
  | { recorded: 'fenced_out'; result: JobResult };

/** Records a dispatched attempt's result, fenced by the attempt number. */
export async function recordResult<M extends JobTypeMap, S>(
  tracker: JobTracker<M, S>,
  job: ClaimedJob,
  result: JobResult,
): Promise<RecordedAttempt> {
  if (result.outcome === 'completed') {
    const applied = await tracker.markCompleted(job.id, job.attempts, { durationMs: result.durationMs });
    return applied ? { recorded: 'completed', result } : { recorded: 'fenced_out', result };
  }
  const failure =
    result.outcome === 'retry_later'
      ? await tracker.markFailed(job.id, job.attempts, result.reason, {
          retryAt: result.retryAt,
          durationMs: result.durationMs,
        })
      : await tracker.markFailed(job.id, job.attempts, result.error, {
          permanent: result.permanent,
          durationMs: result.durationMs,
        });
  return failure ? { recorded: failure.status, result, failure } : { recorded: 'fenced_out', result };
}

/**
 * Runs one delivered attempt end to end, as an executor Lambda does: mark it begun (a duplicate delivery
 * or a stale attempt stops here), dispatch, record the result.
 */
export async function runDeliveredAttempt<M extends JobTypeMap, S>(
  tracker: JobTracker<M, S>,
  dispatcher: JobDispatcher<M, S>,
  delivery: { id: string; attempt: number },
  options: DispatchOptions = {},
): Promise<RecordedAttempt | { recorded: 'duplicate' }> {
  const job = await tracker.startAttempt(delivery.id, delivery.attempt);
  if (!job) return { recorded: 'duplicate' };
  const result = await dispatcher.dispatch(job, options);
  return recordResult(tracker, job, result);
}
