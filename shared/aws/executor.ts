import type { AbortableRun, JobDispatcher, JobResult } from '../jobs/dispatcher.js';
import type { ClaimedJob } from '../jobs/model.js';
import { attemptReport, type RecordedAttempt, recordResult } from '../jobs/record-result.js';
import { DEFAULT_TIMEOUT_SECONDS, DISPATCH_LEASE_SECONDS, type JobTypeMap } from '../jobs/registry.js';
import { type BehindResult, type CompletedAttempt, type JobTracker, plannedStart } from '../jobs/tracker.js';
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
  /** The clock a planned start is waited for on, and the wait (the simulator passes virtual ones). */
  nowMs?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

/** A planned start is at most about a second ahead; a longer wait would come from a clock gone wrong. */
const MAX_PLANNED_START_WAIT_MS = 5_000;

/** What an invocation does with the type's next due job: none, run it here, or hand it to a new invocation. */
type Take = 'none' | 'run' | 'hand-over';

/** What an invocation does next: `take`, and whether it has time for the job after that too (`behind`). */
interface Plan {
  take: Take;
  behind: boolean;
}

/** A job claimed behind the running one (`shared/jobs/sql/behind.ts`), as its executor holds it. */
interface Behind {
  job: ClaimedJob;
  /** Gives it back if the job ahead outlasts most of its dispatch lease. */
  timer: NodeJS.Timeout | undefined;
  /** The give-back, once sent. */
  released?: Promise<unknown>;
}

/** After a job: what was recorded, the next job, and the state the loop carries to it. */
interface Step {
  recorded: RecordedAttempt;
  next: ClaimedJob | null;
  /** `next` was begun by the statement (its lease is its run's: no renewal). */
  begun: boolean;
  /** `next`'s run, already started (a job that was behind starts as the one ahead ends). */
  running: Promise<JobResult> | null;
  /** The job claimed behind `next`. */
  behind: Behind | null;
}

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
 *
 * A type without a rate or a per-key limit also holds its next job *behind* the running one
 * (`shared/jobs/sql/behind.ts`) while the type has no free slot: claimed in the statement that reported the
 * job before, it starts the moment the running one ends, while one statement completes that one, passes
 * its slot to it, begins it and claims the next behind it. The slot does not idle for that round trip.
 */
export class AwsExecutor<M extends JobTypeMap, S> {
  private readonly attemptBudgetMs: number;
  private readonly rateLimited: boolean;
  /** Jobs are claimed behind the running one: a type without a rate or a per-key limit. */
  private readonly behindAllowed: boolean;

  constructor(private readonly options: AwsExecutorOptions<M, S>) {
    const timeoutSeconds =
      options.tracker.registry.get(options.jobType)?.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
    this.attemptBudgetMs = (timeoutSeconds + NEXT_JOB_MARGIN_SECONDS) * 1000;
    this.rateLimited = options.tracker.isRateLimited(options.jobType);
    this.behindAllowed =
      !this.rateLimited && options.tracker.registry.get(options.jobType)?.concurrencyKey === undefined;
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
    const first = await tracker.startAttempt(delivery.jobId, delivery.attempt, { paced: true });
    if (!first && this.rateLimited) {
      // No rate slot within reach (or a duplicate, stale or late delivery: then this changes nothing): the
      // claim goes back to the queue uncounted, for an executor that plans its start.
      const released = await tracker.release([{ id: delivery.jobId, attempt: delivery.attempt }]);
      log.info(
        released.length > 0
          ? 'over the rate: claim handed back'
          : 'duplicate, stale or late delivery ignored',
      );
    } else if (!first) log.info('duplicate, stale or late delivery ignored');
    // One read of the time left per decision (a caller's clock may count its reads).
    const plan = (): Plan => {
      const left = remainingMs?.();
      if (left === undefined) return { take: 'none', behind: false };
      if (left <= this.attemptBudgetMs)
        return { take: this.options.publisher ? 'hand-over' : 'none', behind: false };
      // A job claimed behind the next one runs too: time for both.
      return { take: 'run', behind: this.behindAllowed && left > 2 * this.attemptBudgetMs };
    };

    let outcome: ExecutorOutcome = 'duplicate';
    let nextJobsRun = 0;
    // A duplicate or late delivery runs nothing of its own, but the invocation may still take due work.
    let current: ClaimedJob | null = first ?? (plan().take === 'run' ? await this.claimNext() : null);
    let isFirst = first !== null;
    let carried: Omit<Step, 'recorded' | 'next'> = { begun: false, running: null, behind: null };
    while (current) {
      const job = current;
      if (!isFirst) log.appendKeys({ jobId: job.id, jobType: job.jobType, attempt: job.attempts });
      let renewal: NodeJS.Timeout | undefined;
      let running = carried.running;
      if (!running) {
        await this.waitForStart(isFirst ? (first?.startedAt ?? null) : plannedStart(job));
        renewal = isFirst || carried.begun ? undefined : this.beginIfLong(job);
        running = this.options.dispatcher.dispatch(job);
      }
      const behind = carried.behind;
      const result = await running.finally(() => clearTimeout(renewal));
      const step = await this.finish(job, result, plan(), behind);
      current = step.next;
      carried = step;
      await this.nudgeFollowUps();
      this.logResult(step.recorded);
      if (isFirst) outcome = step.recorded.recorded;
      else nextJobsRun++;
      isFirst = false;
    }
    return { outcome, nextJobsRun };
  }

  /**
   * The one route to the next job: records `job`'s result and takes the type's next due job as `plan`
   * says. A completion and the next claim go in one statement; a failure is recorded, then the claim made.
   * A type that allows it takes its next job from behind `job` (`behind`, started at once) and claims the
   * one after behind that, in the same statement (`handOn`). A job taken to hand over is published to a new
   * invocation; one that cannot be is released (due again at once, uncounted).
   */
  private async finish(job: ClaimedJob, result: JobResult, plan: Plan, behind: Behind | null): Promise<Step> {
    const { tracker, jobType } = this.options;
    const report = attemptReport(job, result);
    let held = behind;
    if (held) {
      clearTimeout(held.timer);
      if (held.released) {
        await held.released;
        held = null;
      }
    }
    if (this.behindAllowed && plan.take === 'run' && report.kind === 'complete') {
      if (held) return this.handOn(report.attempt, result, held, plan.behind);
      const r = await tracker.completeAndClaimBehind(report.attempt, null, jobType, plan.behind);
      return {
        recorded: { recorded: r.completed ? 'completed' : 'fenced_out', result },
        next: r.next,
        begun: false,
        running: null,
        behind: this.holdBehind(r.behind),
      };
    }
    // Today's path: the job behind, if any, goes back uncounted first (its slot is the one `job` frees).
    if (held) await this.release(held.job);
    const take = plan.take;
    let recorded: RecordedAttempt;
    let next: ClaimedJob | null = null;
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
    return { recorded, next, begun: false, running: null, behind: null };
  }

  /**
   * The job ahead completed: the job behind it starts now, while one statement completes the one ahead,
   * passes its slot to the one behind and begins it, and claims the next behind that (`claimBehind`). It
   * starts before the answer only while its dispatch lease has BEGIN_BEFORE_LEASE_ENDS_MS left (nobody
   * else may take it before then, and the statement's answer comes back well within it); else only once
   * the statement began it. Not begun (the slot was no longer the finished job's, or the job behind no
   * longer this claim's): it is stopped and given back uncounted. The statement failed: it is stopped and
   * the invocation ends; its lease brings it back.
   */
  private async handOn(
    done: CompletedAttempt,
    result: JobResult,
    held: Behind,
    claimBehind: boolean,
  ): Promise<Step> {
    const { tracker, jobType, log } = this.options;
    const b = held.job;
    const early = this.leaseLeftMs(b) >= BEGIN_BEFORE_LEASE_ENDS_MS ? this.start(b) : null;
    let r: BehindResult;
    try {
      r = await tracker.completeAndClaimBehind(done, { id: b.id, attempt: b.attempts }, jobType, claimBehind);
    } catch (err) {
      if (early) await this.stop(early, b);
      throw err;
    }
    const recorded: RecordedAttempt = { recorded: r.completed ? 'completed' : 'fenced_out', result };
    if (r.begun && r.next) {
      return {
        recorded,
        next: r.next,
        begun: true,
        running: early ? early.result : null,
        behind: this.holdBehind(r.behind),
      };
    }
    log.warn('the job behind could not take the slot: given back', { behindJobId: b.id });
    if (early) await this.stop(early, b);
    await this.release(b);
    return { recorded, next: await this.claimNext(), begun: false, running: null, behind: null };
  }

  /** Starts a job's run now; its handle lets it be cut short. */
  private start(job: ClaimedJob): { result: Promise<JobResult>; run: () => AbortableRun | undefined } {
    let handle: AbortableRun | undefined;
    const result = this.options.dispatcher.dispatch(job, {
      onStart: (run) => {
        handle = run;
      },
    });
    return { result, run: () => handle };
  }

  /**
   * Cuts short a job started ahead of its begin and waits for its code to stop, while its dispatch lease
   * still holds (nobody else runs it before then).
   */
  private async stop(
    started: { result: Promise<JobResult>; run: () => AbortableRun | undefined },
    job: ClaimedJob,
  ): Promise<void> {
    const run = started.run();
    run?.abort(new Error('not begun: the job behind did not take the slot'));
    await started.result;
    let timer: NodeJS.Timeout | undefined;
    const gaveUp = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, Math.max(0, this.leaseLeftMs(job) - 5_000));
      timer.unref?.();
    });
    await Promise.race([run?.executorStopped ?? Promise.resolve(), gaveUp]).finally(() =>
      clearTimeout(timer),
    );
  }

  /** A claim this invocation will not run, given back uncounted (else its dispatch lease brings it back). */
  private async release(job: ClaimedJob): Promise<void> {
    try {
      await this.options.tracker.release([{ id: job.id, attempt: job.attempts }]);
    } catch (err) {
      this.options.log.warn('could not give a claim back', { jobId: job.id, error: String(err) });
    }
  }

  /**
   * Holds a job claimed behind the running one. If the running one outlasts most of its dispatch lease,
   * it is given back then, uncounted: the rescuer would otherwise hand it back as undelivered.
   */
  private holdBehind(job: ClaimedJob | null): Behind | null {
    if (!job) return null;
    const held: Behind = { job, timer: undefined };
    held.timer = setTimeout(
      () => {
        held.released = this.release(job);
      },
      Math.max(0, this.leaseLeftMs(job) - BEGIN_BEFORE_LEASE_ENDS_MS),
    );
    held.timer.unref?.();
    return held;
  }

  /** How long `job`'s lease has left, on the clock its lease was set by. */
  private leaseLeftMs(job: ClaimedJob): number {
    const now = this.options.tracker.clock.now()?.getTime() ?? (this.options.nowMs ?? Date.now)();
    return (job.leaseExpiresAt?.getTime() ?? now) - now;
  }

  private async claimNext(): Promise<ClaimedJob | null> {
    return (await this.options.tracker.completeAndClaimNext(null, this.options.jobType)).next;
  }

  /**
   * A rate-limited type's job runs at its planned start (its rate slot's time), not before: its starts
   * keep the rate however its claim and its event were delayed. Others start at once.
   */
  private async waitForStart(at: Date | null): Promise<void> {
    if (!this.rateLimited || !at) return;
    const nowMs = this.options.nowMs ?? Date.now;
    const wait = Math.min(at.getTime() - nowMs(), MAX_PLANNED_START_WAIT_MS);
    if (wait <= 0) return;
    await (this.options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))))(
      wait,
    );
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
