import { errorMessage, JobInputError, PermanentJobError, RetryJobLater } from './errors.js';
import type { ClaimedJob } from './model.js';
import type { JobContext, JobTypeMap, JobTypeRegistry, RegisteredJobType } from './registry.js';

/**
 * After a timeout, how long an executor that ignores its abort signal may take to stop before the failure
 * is reported anyway. Well inside the lease's grace (LEASE_GRACE_SECONDS), so no other attempt starts first.
 */
const TIMEOUT_SETTLE_MS = 30_000;

/**
 * The result of running one attempt, before it is recorded: `completed`, `failed` (recorded as `failed`)
 * or `retry_later` (recorded as `retry_requested`); see `ATTEMPT_OUTCOMES` (outcomes.ts).
 */
export type JobResult =
  | { outcome: 'completed'; durationMs: number }
  | { outcome: 'failed'; error: string; permanent: boolean; durationMs: number }
  | { outcome: 'retry_later'; retryAt: Date; reason: string; durationMs: number };

/** A run in progress, as its owner sees it: something it can cut short. */
export interface AbortableRun {
  readonly job: ClaimedJob;
  /** Aborts the run: the executor's signal fires and the run settles at once as failed with `reason`. */
  abort(reason: Error): void;
  /** Why the run was aborted, if it was. */
  readonly abortReason: Error | undefined;
  /**
   * Settles once the executor itself has returned or thrown (at once if it never began). An aborted run
   * settles before its executor stops, if it stops at all: a caller about to make the job due again waits
   * on this first, so that no other attempt starts beside an executor that ignored its signal.
   */
  readonly executorStopped: Promise<void>;
}

export interface DispatchOptions {
  /** Receives the run as soon as it starts (the worker keeps it to interrupt the run at shutdown). */
  onStart?: (run: AbortableRun) => void;
}

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

  /** Runs the job's executor under the type's timeout; never rejects. */
  dispatch(job: ClaimedJob, options: DispatchOptions = {}): Promise<JobResult> {
    const started = performance.now();
    const jobType = this.registry.get(job.jobType);
    if (!jobType) {
      // Retrying cannot make an unknown type known: fail at once, with the reason.
      return Promise.resolve(failed(`unknown job type "${job.jobType}"`, true, started));
    }
    let payload: unknown;
    try {
      payload = this.registry.parsePayload(job.jobType, job.payload);
    } catch (err) {
      return Promise.resolve(failed(errorMessage(err), true, started));
    }
    return new Promise<JobResult>((resolve) => {
      const run = new Run(job, this.services, jobType, started, resolve);
      options.onStart?.(run);
      run.start(payload);
    });
  }
}

function ignore(): void {}

function failed(error: string, permanent: boolean, started: number): JobResult {
  return { outcome: 'failed', error, permanent, durationMs: performance.now() - started };
}

function onRunTimeout<S>(run: Run<S>): void {
  run.timedOut();
}

/**
 * One attempt in flight. A class rather than closures: at tens of thousands of runs per second, the
 * objects a run allocates are measurable, so the AbortSignal is made only if the executor reads it and the
 * timeout error only if the timeout fires.
 */
class Run<S> implements AbortableRun, JobContext<S> {
  readonly attempt: number;
  private controller: AbortController | undefined;
  abortReason: Error | undefined;
  private settled = false;
  private timer: NodeJS.Timeout | undefined;
  /** The executor's own promise, kept to wait for it after a timeout. */
  private work: Promise<unknown> | undefined;

  constructor(
    readonly job: ClaimedJob,
    readonly services: S,
    private readonly jobType: RegisteredJobType<S>,
    private readonly started: number,
    private readonly resolve: (result: JobResult) => void,
  ) {
    this.attempt = job.attempts;
  }

  get executorStopped(): Promise<void> {
    return this.work ? this.work.then(ignore, ignore) : Promise.resolve();
  }

  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    if (this.abortReason && !this.controller.signal.aborted) this.controller.abort(this.abortReason);
    return this.controller.signal;
  }

  start(payload: unknown): void {
    if (this.abortReason) return; // aborted by `onStart` before it began
    this.timer = setTimeout(onRunTimeout, this.jobType.timeoutSeconds * 1000, this);
    let work: Promise<undefined | RetryJobLater>;
    try {
      work = this.jobType.execute(payload, this);
    } catch (err) {
      this.finish(err, false);
      return;
    }
    this.work = work;
    work.then(
      (value) => this.finish(value, true),
      (err: unknown) => this.finish(err, false),
    );
  }

  abort(reason: Error): void {
    if (this.abortReason || this.settled) return;
    this.abortReason = reason;
    this.controller?.abort(reason);
    this.finish(reason, false);
  }

  timedOut(): void {
    this.timer = undefined;
    if (this.settled) return;
    const reason = new Error(`timed out after ${this.jobType.timeoutSeconds} s`);
    this.abortReason = reason;
    this.controller?.abort(reason);
    if (!this.work) {
      this.finish(reason, false);
      return;
    }
    // An executor that ignores its signal would otherwise keep running while the failure is recorded and
    // a retry starts: give it a while to stop before reporting (the lease still covers this).
    this.settled = true;
    let settle: NodeJS.Timeout | undefined;
    const gaveUp = new Promise<void>((r) => {
      settle = setTimeout(r, TIMEOUT_SETTLE_MS);
    });
    void Promise.race([this.executorStopped, gaveUp]).then(() => {
      clearTimeout(settle);
      this.resolve(failed(errorMessage(reason), false, this.started));
    });
  }

  private finish(value: unknown, fulfilled: boolean): void {
    if (this.settled) return;
    this.settled = true;
    if (this.timer) clearTimeout(this.timer);
    const durationMs = performance.now() - this.started;
    if (value instanceof RetryJobLater) {
      this.resolve({ outcome: 'retry_later', retryAt: value.retryAt, reason: value.message, durationMs });
    } else if (fulfilled) {
      this.resolve({ outcome: 'completed', durationMs });
    } else {
      const permanent = value instanceof PermanentJobError || value instanceof JobInputError;
      this.resolve({ outcome: 'failed', error: errorMessage(value), permanent, durationMs });
    }
  }
}
