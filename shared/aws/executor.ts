import type { JobDispatcher, JobResult } from '../jobs/dispatcher.js';
import type { ClaimedJob } from '../jobs/model.js';
import { attemptReport, type RecordedAttempt, recordResult } from '../jobs/record-result.js';
import { DEFAULT_TIMEOUT_SECONDS, DISPATCH_LEASE_SECONDS, type JobTypeMap } from '../jobs/registry.js';
import type { JobTracker } from '../jobs/tracker.js';
import { type JobPublisher, publishWithRetry, toJobReadyEvent } from './fetch-ready.js';
import type { FollowUpNudge } from './follow-ups.js';

/** What became of the delivered attempt (`duplicate`: a duplicate, stale or late delivery ran nothing). */
export type ExecutorOutcome = 'completed' | 'retrying' | 'failed' | 'fenced_out' | 'duplicate';

/** A job an invocation claimed for itself is begun (its lease renewed) this long before its dispatch lease ends. */
const BEGIN_BEFORE_LEASE_ENDS_MS = 30_000;

/** Time kept beyond a job's own timeout before an invocation takes another job: reporting it, and margin. */
export const NEXT_JOB_MARGIN_SECONDS = 30;

/** The executor's log (Powertools' Logger on AWS): keys appended per job. */
export interface ExecutorLog {
  info(message: string, ...extra: Record<string, unknown>[]): void;
  warn(message: string, ...extra: Record<string, unknown>[]): void;
  error(message: string, ...extra: Record<string, unknown>[]): void;
  appendKeys(keys: Record<string, unknown>): void;
}

export interface AwsExecutorOptions<M extends JobTypeMap, S> {
  tracker: JobTracker<M, S>;
  dispatcher: JobDispatcher<M, S>;
  /** The one type this executor runs. */
  jobType: string;
  log: ExecutorLog;
  /** Wakes fetch-ready after a run that enqueued due follow-ups (types that declare `enqueues`). */
  followUps?: FollowUpNudge;
  /**
   * Where an invocation out of time for another job hands its slot: it publishes the type's next due job
   * to a new invocation (on AWS the jobs bus). Without it the slot waits for fetch-ready's next run.
   */
  publisher?: JobPublisher;
}

/** What an invocation does with the type's next due job: none, run it here, or hand it to a new invocation. */
type Take = 'none' | 'run' | 'hand-over';

/**
 * The executor Lambda's loop, for one job type (the handler in `functions/executor/` parses the event and
 * calls `run`). It starts the delivered attempt (a duplicate delivery, or an attempt the table has moved
 * past, stops there), runs it through the dispatcher and records its result fenced by the attempt number.
 *
 * Then, while the invocation has time left for a whole attempt, it takes its type's next due job (within
 * the type's concurrency limit, in the statement that reports the last one) and runs it too: a slot that
 * frees is refilled without waiting for fetch-ready and an event per job. Out of time, it takes the next
 * job the same way and publishes it to a new invocation, so the slot is refilled at once; done by each
 * invocation for itself, executors that started together and end together do not all wake fetch-ready.
 */
export class AwsExecutor<M extends JobTypeMap, S> {
  private readonly attemptBudgetMs: number;

  constructor(private readonly options: AwsExecutorOptions<M, S>) {
    const timeoutSeconds =
      options.tracker.registry.get(options.jobType)?.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
    this.attemptBudgetMs = (timeoutSeconds + NEXT_JOB_MARGIN_SECONDS) * 1000;
  }

  /**
   * One invocation: the delivered attempt, then (with `remainingMs`, the invocation's time left) the
   * type's next due jobs while a whole attempt fits. Returns the delivered attempt's outcome and how many
   * more jobs ran.
   */
  async run(
    delivery: { jobId: string; attempt: number },
    remainingMs?: () => number,
  ): Promise<{ outcome: ExecutorOutcome; nextJobsRun: number }> {
    const { tracker, log } = this.options;
    const first = await tracker.startAttempt(delivery.jobId, delivery.attempt);
    if (!first) log.info('duplicate, stale or late delivery ignored');
    const take = (): Take =>
      remainingMs === undefined
        ? 'none'
        : remainingMs() > this.attemptBudgetMs
          ? 'run'
          : this.options.publisher
            ? 'hand-over'
            : 'none';

    let outcome: ExecutorOutcome = 'duplicate';
    let nextJobsRun = 0;
    // A duplicate or late delivery runs nothing of its own, but the invocation may still take due work.
    let current: ClaimedJob | null = first ?? (take() === 'run' ? await this.claimNext() : null);
    let isFirst = first !== null;
    while (current) {
      const job = current;
      if (!isFirst) log.appendKeys({ jobId: job.id, jobType: job.jobType, attempt: job.attempts });
      const renewal = isFirst ? undefined : this.beginIfLong(job);
      const result = await this.options.dispatcher.dispatch(job).finally(() => clearTimeout(renewal));
      const { recorded, next } = await this.finish(job, result, take());
      current = next;
      await this.nudgeFollowUps();
      this.logResult(recorded);
      if (isFirst) outcome = recorded.recorded;
      else nextJobsRun++;
      isFirst = false;
    }
    return { outcome, nextJobsRun };
  }

  /**
   * The one route to the next job: records `job`'s result and takes the type's next due job as `take`
   * says. A completion and the next claim go in one statement; a failure is recorded, then the claim made.
   * A job taken to hand over is published to a new invocation; one that cannot be is released (due again
   * at once, uncounted).
   */
  private async finish(
    job: ClaimedJob,
    result: JobResult,
    take: Take,
  ): Promise<{ recorded: RecordedAttempt; next: ClaimedJob | null }> {
    const { tracker, jobType } = this.options;
    let recorded: RecordedAttempt;
    let next: ClaimedJob | null = null;
    const report = attemptReport(job, result);
    if (take !== 'none' && report.kind === 'complete') {
      const r = await tracker.completeAndClaimNext(report.attempt, jobType);
      recorded = r.completed ? { recorded: 'completed', result } : { recorded: 'fenced_out', result };
      next = r.next;
    } else {
      recorded = await recordResult(tracker, job, result);
      if (take !== 'none') next = await this.claimNext();
    }
    if (take === 'hand-over' && next) {
      await this.handOver(next);
      next = null;
    }
    return { recorded, next };
  }

  private async claimNext(): Promise<ClaimedJob | null> {
    return (await this.options.tracker.fetchReady(1, { jobType: this.options.jobType }))[0] ?? null;
  }

  /** Out of time, perhaps not of work: another invocation takes the slot now. */
  private async handOver(job: ClaimedJob): Promise<void> {
    const event = toJobReadyEvent(job);
    try {
      const { outcomes } = await publishWithRetry(this.options.publisher!, [event]);
      if (!outcomes[0]?.ok) await this.options.tracker.release([{ id: event.jobId, attempt: event.attempt }]);
    } catch (err) {
      // A claim left unpublished is handed back uncounted when its dispatch lease ends.
      this.options.log.warn('could not hand the slot back to fetch-ready', { error: String(err) });
    }
  }

  /**
   * A job this invocation claimed for itself (no event) holds a dispatch lease and runs at once: no
   * statement to begin it. If the run outlasts most of the lease, the executor begins it then, which renews
   * the lease to the run's. An invocation that dies before that frees the slot within the dispatch lease
   * and the claim goes back uncounted (bounded by MAX_HANDBACKS, so a job that kills its executor every
   * time still ends).
   */
  private beginIfLong(job: ClaimedJob): NodeJS.Timeout {
    const { tracker, log } = this.options;
    const leaseLeftMs = (job.leaseExpiresAt?.getTime() ?? Date.now()) - Date.now();
    const timer = setTimeout(
      () => {
        void tracker.startAttempt(job.id, job.attempts).then(
          (begun) => {
            if (!begun) log.error('could not renew the lease of a running job', { jobId: job.id });
          },
          (err: unknown) =>
            log.error('could not renew the lease of a running job', { jobId: job.id, error: String(err) }),
        );
      },
      Math.max(0, Math.min(leaseLeftMs, DISPATCH_LEASE_SECONDS * 1000) - BEGIN_BEFORE_LEASE_ENDS_MS),
    );
    timer.unref?.();
    return timer;
  }

  private async nudgeFollowUps(): Promise<void> {
    const { followUps, log } = this.options;
    // After a run: its transactions (and the follow-ups they enqueued) have committed.
    if (await followUps?.afterRun((err) => log.warn('could not nudge fetch-ready', { error: String(err) })))
      log.info('follow-up jobs enqueued: fetch-ready nudged');
  }

  private logResult(recorded: RecordedAttempt): void {
    const r = recorded.result;
    if (r.outcome === 'failed')
      this.options.log.warn('attempt failed', {
        error: r.error,
        permanent: r.permanent,
        recorded: recorded.recorded,
      });
    else
      this.options.log.info('attempt finished', {
        outcome: r.outcome,
        recorded: recorded.recorded,
        durationMs: Math.round(r.durationMs),
      });
  }
}
