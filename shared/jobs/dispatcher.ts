import { errorMessage, JobInputError, PermanentJobError, RetryJobLater } from './errors.js';
import type { Job } from './model.js';
import type { JobTypeMap, JobTypeRegistry } from './registry.js';

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

  async dispatch(job: Job, options: { signal?: AbortSignal } = {}): Promise<JobResult> {
    const started = performance.now();
    const elapsed = () => performance.now() - started;
    const jobType = this.registry.get(job.jobType);
    if (!jobType) {
      // Retrying cannot make an unknown type known: fail at once, with the reason.
      return { outcome: 'failed', error: `unknown job type "${job.jobType}"`, permanent: true, durationMs: elapsed() };
    }
    let payload: unknown;
    try {
      payload = this.registry.parsePayload(job.jobType, job.payload);
    } catch (err) {
      return { outcome: 'failed', error: errorMessage(err), permanent: true, durationMs: elapsed() };
    }
    const timeout = AbortSignal.timeout(jobType.timeoutSeconds * 1000);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    try {
      const result = await raceAbort(
        jobType.execute(payload, { job, attempt: job.attempts, signal, services: this.services }),
        signal,
        jobType.timeoutSeconds,
      );
      if (result instanceof RetryJobLater) {
        return { outcome: 'retry_later', retryAt: result.retryAt, reason: result.message, durationMs: elapsed() };
      }
      return { outcome: 'completed', durationMs: elapsed() };
    } catch (err) {
      if (err instanceof RetryJobLater) {
        return { outcome: 'retry_later', retryAt: err.retryAt, reason: err.message, durationMs: elapsed() };
      }
      const permanent = err instanceof PermanentJobError || err instanceof JobInputError;
      return { outcome: 'failed', error: errorMessage(err), permanent, durationMs: elapsed() };
    }
  }
}

/** Settles with the executor, or rejects when the signal aborts (an executor that ignores it is abandoned). */
function raceAbort<T>(work: Promise<T>, signal: AbortSignal, timeoutSeconds: number): Promise<T> {
  if (signal.aborted) return Promise.reject(abortError(signal, timeoutSeconds));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortError(signal, timeoutSeconds));
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

function abortError(signal: AbortSignal, timeoutSeconds: number): Error {
  const reason = signal.reason as unknown;
  if (reason instanceof DOMException && reason.name === 'TimeoutError') {
    return new Error(`timed out after ${timeoutSeconds} s`);
  }
  return new Error(`aborted: ${errorMessage(reason)}`);
}
