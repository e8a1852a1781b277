import type { JobTypeMap } from '../jobs/registry.js';
import type { FailResult, JobTracker } from '../jobs/tracker.js';

/**
 * When an idle worker claims next without being woken: at the next scheduled job, or after the poll
 * interval, whichever is sooner; after an error, after its backoff. A failure just recorded that is due
 * again before then (a short backoff, a retry the executor asked for in a moment) moves it forward.
 */
export class PollTimer<M extends JobTypeMap, S> {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly deps: {
      tracker: JobTracker<M, S>;
      intervalMs: number;
      /** Claims now. */
      wake: () => void;
      /** A claim is in flight, or the worker is stopping: no sleep to plan. */
      isBusy: () => boolean;
    },
  ) {}

  clear(): void {
    clearTimeout(this.timer);
  }

  /** Claims again after `ms` (a failed claim's backoff). */
  retryIn(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.deps.wake(), ms);
  }

  /** With nothing due, sleeps until the next scheduled job: `known` when a short claim said, else asked. */
  sleepUntilNextDue(known?: Date | null): void {
    const { tracker, wake } = this.deps;
    clearTimeout(this.timer);
    let delay = this.deps.intervalMs;
    const nextDueAt = known === undefined ? tracker.nextDueAt() : Promise.resolve(known);
    nextDueAt.then(
      (next) => {
        if (this.deps.isBusy()) return;
        if (next) {
          const now = tracker.clock.now() ?? new Date();
          delay = Math.max(0, Math.min(delay, next.getTime() - now.getTime() + 5));
        }
        clearTimeout(this.timer);
        this.timer = setTimeout(() => wake(), delay);
      },
      () => {
        this.timer = setTimeout(() => wake(), delay);
      },
    );
  }

  /** If the worker is asleep, re-plans its sleep so that a retry due before the next poll runs on time. */
  afterFailures(failed: readonly FailResult[]): void {
    const now = (this.deps.tracker.clock.now() ?? new Date()).getTime();
    if (failed.some((f) => f.status === 'retrying' && f.scheduledAt.getTime() - now < this.deps.intervalMs)) {
      this.sleepUntilNextDue();
    }
  }
}
