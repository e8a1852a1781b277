import { errorMessage, JobInputError, PermanentJobError, RetryJobLater } from './errors.js';
import type { ClaimedJob } from './model.js';
import type { JobTypeMap, JobTypeRegistry } from './registry.js';

/**
 * After a timeout, how long an executor that ignores its abort signal may take to stop before the failure
 * is reported anyway. Well inside the lease's grace (LEASE_GRACE_SECONDS), so no other attempt starts first.
 */
const TIMEOUT_SETTLE_MS = 30_000;

/** The result of running one attempt, before it is recorded. */
export type JobResult =
  | { outcome: 'completed'; durationMs: number }
  | { outcome: 'failed'; error: string; permanent: boolean; durationMs: number }
  | { outcome: 'retry_later'; retryAt: Date; reason: string; durationMs: number };

/**
 * Runs a job's executor by type. It validates the payload again (the row may predate a schema change, or
 * have been written by hand), enforces the type's timeout through an AbortSignal, and turns whatever the
 * executor does into a `JobResult`. It writes nothing: recording the result is the caller's step, so a
 * worker can batch it and a Lambda can fence it.
 */
export class JobDispatcher<M extends JobTypeMap = JobTypeMap, S = unknown> {
  constructor(
    readonly registry: JobTypeRegistry<M, S>,
    readonly services: S,
  ) {}

  /**
   * Runs the job's executor under the type's timeout. `onAbortable` receives a function that aborts the
   * run (the worker uses it at shutdown). The AbortSignal an executor sees is created only if it asks for
   * it: at tens of thousands of runs per second, signals nobody reads are measurable garbage.
   */
  async dispatch(
    job: ClaimedJob,
    options: { onAbortable?: (abort: (reason: Error) => void) => void } = {},
  ): Promise<JobResult> {
    const started = performance.now();
    const elapsed = () => performance.now() - started;
    const jobType = this.registry.get(job.jobType);
    if (!jobType) {
      // Retrying cannot make an unknown type known: fail at once, with the reason.
      return {
        outcome: 'failed',
        error: `unknown job type "${job.jobType}"`,
        permanent: true,
        durationMs: elapsed(),
      };
    }
    let payload: unknown;
    try {
      payload = this.registry.parsePayload(job.jobType, job.payload);
    } catch (err) {
      return { outcome: 'failed', error: errorMessage(err), permanent: true, durationMs: elapsed() };
    }
    let controller: AbortController | undefined;
    let abortReason: Error | undefined;
    let rejectRun: ((reason: Error) => void) | undefined;
    const abort = (reason: Error) => {
      if (abortReason) return;
      abortReason = reason;
      controller?.abort(reason);
      rejectRun?.(reason);
    };
    const ctx = {
      job,
      attempt: job.attempts,
      services: this.services,
      get signal(): AbortSignal {
        controller ??= new AbortController();
        if (abortReason && !controller.signal.aborted) controller.abort(abortReason);
        return controller.signal;
      },
    };
    const timedOut = new Error(`timed out after ${jobType.timeoutSeconds} s`);
    const timer = setTimeout(() => abort(timedOut), jobType.timeoutSeconds * 1000);
    options.onAbortable?.(abort);
    let work: Promise<undefined | RetryJobLater> | undefined;
    try {
      // Settles with the executor, or as soon as the run is aborted.
      const result = await new Promise<undefined | RetryJobLater>((resolve, reject) => {
        rejectRun = reject;
        if (abortReason) reject(abortReason);
        work = jobType.execute(payload, ctx);
        work.then(resolve, reject);
      });
      if (result instanceof RetryJobLater) {
        return {
          outcome: 'retry_later',
          retryAt: result.retryAt,
          reason: result.message,
          durationMs: elapsed(),
        };
      }
      return { outcome: 'completed', durationMs: elapsed() };
    } catch (err) {
      if (err instanceof RetryJobLater) {
        return { outcome: 'retry_later', retryAt: err.retryAt, reason: err.message, durationMs: elapsed() };
      }
      if (err === timedOut && work) {
        // An executor that ignores its signal would otherwise keep running while the failure is recorded
        // and a retry starts: give it a while to stop before reporting (the lease still covers this).
        let settle: NodeJS.Timeout | undefined;
        const gaveUp = new Promise<void>((resolve) => {
          settle = setTimeout(resolve, TIMEOUT_SETTLE_MS);
        });
        await Promise.race([work.catch(() => {}), gaveUp]);
        clearTimeout(settle);
      }
      const permanent = err instanceof PermanentJobError || err instanceof JobInputError;
      return { outcome: 'failed', error: errorMessage(err), permanent, durationMs: elapsed() };
    } finally {
      clearTimeout(timer);
    }
  }
}
