import type { JobResult } from '../jobs/dispatcher.js';
import { errorMessage } from '../jobs/errors.js';
import type { ClaimedJob } from '../jobs/model.js';
import { attemptReport } from '../jobs/record-result.js';
import type { JobTypeMap } from '../jobs/registry.js';
import type { CompletedAttempt, FailedAttempt, FailResult, JobTracker } from '../jobs/tracker.js';
import type { Logger } from './logger.js';
import type { AttemptEvent } from './worker-options.js';

/** A run that ended, waiting to be recorded. */
export interface Finished {
  job: ClaimedJob;
  result: JobResult;
  /** The run was interrupted by shutdown: retry at once rather than after a backoff. */
  interrupted: boolean;
}

/** How a worker's statements back off after errors: one count for its claims and its records. */
export class ErrorBackoff {
  /** Failures in a row. */
  count = 0;

  succeeded(): void {
    this.count = 0;
  }

  /** Counts a failure; returns how long to wait before the next try. */
  failed(): number {
    this.count++;
    return this.ms;
  }

  /** The wait after the failures so far: 250 ms doubling, at most 30 s. */
  get ms(): number {
    return Math.min(30_000, 250 * 2 ** Math.min(this.count, 7));
  }
}

/**
 * What a local worker reports to the tracker: the results of its runs, batched (one statement for the
 * completions and one for the failures of everything that finished meanwhile, each result turned into
 * the tracker's call by `attemptReport`), and the claims it hands back unstarted. A failed batch is kept
 * and tried again: losing it would re-run completed work after the lease expires. A killed worker records
 * nothing more (a dead process reports nothing; its leases expire instead).
 */
export class WorkerReports<M extends JobTypeMap, S> {
  private readonly toRecord: Finished[] = [];
  private flushing: Promise<void> | null = null;
  /** Releases in flight; `stop()` waits for them, so no claim it hands back is still `running` after it. */
  private readonly releasing = new Set<Promise<void>>();

  constructor(
    private readonly deps: {
      tracker: JobTracker<M, S>;
      logger: Logger;
      backoff: ErrorBackoff;
      isKilled: () => boolean;
      /** Failures just recorded (a retry may be due before the next poll). */
      onFailed: (failed: readonly FailResult[]) => void;
      /** A flush ended (the worker may be idle now). */
      onFlushed: () => void;
      /** Jobs of a type with a per-key limit were recorded as ended: their keys may be free. */
      onKeyedJobsEnded: () => void;
      onAttemptRecorded?: (event: AttemptEvent) => void;
    },
  ) {}

  /** Results not yet recorded, counting a batch in flight. */
  get unrecorded(): number {
    return this.toRecord.length;
  }

  get busy(): boolean {
    return this.flushing !== null || this.toRecord.length > 0;
  }

  /** Queues a result; it is recorded with whatever else finishes in the same turn. */
  add(finished: Finished): void {
    this.toRecord.push(finished);
    this.scheduleFlush();
  }

  /** Forgets the results not yet recorded (the process died). */
  dropUnrecorded(): void {
    this.toRecord.length = 0;
  }

  /** Records every result queued (retrying failed batches) and waits for the releases in flight. */
  async flushAll(): Promise<void> {
    while (this.flushing || this.toRecord.length > 0) {
      if (!this.flushing) this.scheduleFlush();
      await this.flushing;
    }
    // A claim that was in flight when stop began hands its jobs back after it answers: wait for it.
    while (this.releasing.size > 0) await Promise.all(this.releasing);
  }

  /** Hands back claims this worker never started: due again at once, the attempt uncounted. */
  releaseUnstarted(jobs: ClaimedJob[]): Promise<void> {
    const release = this.release(jobs).finally(() => this.releasing.delete(release));
    this.releasing.add(release);
    return release;
  }

  private async release(jobs: ClaimedJob[]): Promise<void> {
    try {
      await this.deps.tracker.release(
        jobs.map((j) => ({ id: j.id, attempt: j.attempts })),
        // This worker claimed them with startNow, but never ran them: uncount the attempt.
        { requireUnstarted: false },
      );
    } catch (err) {
      this.deps.logger.error('releasing unstarted jobs failed; their leases will expire', {
        error: errorMessage(err),
        jobs: jobs.length,
      });
    }
  }

  private scheduleFlush(): void {
    if (this.flushing) return;
    this.flushing = (async () => {
      // Let results that finish in the same turn join this batch.
      await new Promise((r) => setImmediate(r));
      while (this.toRecord.length > 0 && !this.deps.isKilled()) {
        const batch = this.toRecord.splice(0, this.toRecord.length);
        try {
          await this.record(batch);
          this.deps.backoff.succeeded();
        } catch (err) {
          if (this.deps.isKilled()) break;
          this.toRecord.unshift(...batch);
          const waitMs = this.deps.backoff.failed();
          this.deps.logger.error('recording results failed', {
            error: errorMessage(err),
            jobs: batch.length,
          });
          await new Promise((r) => setTimeout(r, waitMs));
        }
      }
    })().finally(() => {
      this.flushing = null;
      this.deps.onFlushed();
    });
  }

  private async record(batch: Finished[]): Promise<void> {
    const { tracker, logger } = this.deps;
    const completions: CompletedAttempt[] = [];
    const failures: FailedAttempt[] = [];
    for (const { job, result, interrupted } of batch) {
      const report = attemptReport(job, result, { interrupted });
      if (report.kind === 'complete') completions.push(report.attempt);
      else failures.push(report.attempt);
    }
    const [completed, failed] =
      failures.length === 0
        ? [await tracker.completeMany(completions), []]
        : await Promise.all([tracker.completeMany(completions), tracker.failMany(failures)]);
    if (batch.some(({ job }) => tracker.registry.get(job.jobType)?.concurrencyKey))
      this.deps.onKeyedJobsEnded();
    const onRecorded = this.deps.onAttemptRecorded;
    // The common case: every completion applied, nothing failed, nobody listening. Nothing more to do.
    if (!onRecorded && failures.length === 0 && completed.length === completions.length) return;
    this.deps.onFailed(failed);
    const completedIds = new Set(completed);
    const failedById = new Map(failed.map((f) => [f.id, f]));
    for (const { job, result } of batch) {
      const failure = failedById.get(job.id);
      const status = completedIds.has(job.id) ? 'completed' : failure ? failure.status : 'fenced_out';
      if (status === 'fenced_out') {
        logger.warn('result discarded: the attempt is no longer current', {
          jobId: job.id,
          attempt: job.attempts,
        });
      } else if (status === 'failed' && result.outcome === 'failed') {
        logger.warn('job failed for good', { jobId: job.id, type: job.jobType, error: result.error });
      }
      onRecorded?.({
        job,
        result,
        status,
        ...(failure?.status === 'retrying' ? { nextRunAt: failure.scheduledAt } : {}),
      });
    }
  }
}
