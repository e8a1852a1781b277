import type { JobResult } from './dispatcher.js';
import type { ClaimedJob } from './model.js';
import type { JobTypeMap } from './registry.js';
import type { CompletedAttempt, FailedAttempt, FailResult, JobTracker } from './tracker.js';

/**
 * The tracker's call for an attempt's result: a completion, or a failure under the retry rule (a
 * `retry_later` at its own time, an interrupted run due again at once). The one place a result becomes a
 * report, whoever ran the job: the local worker batches these, an executor makes one at a time.
 */
export type AttemptReport =
  | { kind: 'complete'; attempt: CompletedAttempt }
  | { kind: 'fail'; attempt: FailedAttempt };

export function attemptReport(
  job: ClaimedJob,
  result: JobResult,
  options: {
    /** The run was cut short by its worker's shutdown: due again at once, whatever the executor said. */
    interrupted?: boolean;
  } = {},
): AttemptReport {
  const ref = { id: job.id, attempt: job.attempts, durationMs: result.durationMs };
  if (result.outcome === 'completed') return { kind: 'complete', attempt: ref };
  if (result.outcome === 'retry_later')
    return { kind: 'fail', attempt: { ...ref, error: result.reason, retryAt: result.retryAt } };
  if (options.interrupted)
    return {
      kind: 'fail',
      attempt: { ...ref, error: 'interrupted: the worker shut down during the attempt', interrupted: true },
    };
  return { kind: 'fail', attempt: { ...ref, error: result.error, permanent: result.permanent } };
}

export type RecordedAttempt =
  | { recorded: 'completed'; result: JobResult }
  | { recorded: 'retrying' | 'failed'; result: JobResult; failure: FailResult }
  /** The attempt was no longer current when its result came in (lease expired, cancelled): nothing changed. */
  | { recorded: 'fenced_out'; result: JobResult };

/** Records one attempt's result (`attemptReport`), fenced by the attempt number. */
export async function recordResult<M extends JobTypeMap, S>(
  tracker: JobTracker<M, S>,
  job: ClaimedJob,
  result: JobResult,
): Promise<RecordedAttempt> {
  const report = attemptReport(job, result);
  if (report.kind === 'complete') {
    const applied = await tracker.completeMany([report.attempt]);
    return applied.length === 1 ? { recorded: 'completed', result } : { recorded: 'fenced_out', result };
  }
  const [failure] = await tracker.failMany([report.attempt]);
  return failure ? { recorded: failure.status, result, failure } : { recorded: 'fenced_out', result };
}
