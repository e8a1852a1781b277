import { createdJobDueNow, type JobTracker } from '../jobs/tracker.js';
import type { FetchReadyWaker, WakeErrorReporter } from './waker.js';

/** What the lending services use of the tracker. */
export type ServiceTracker = Pick<JobTracker, 'enqueueUntyped' | 'pruneFinished' | 'clock'>;

/**
 * On AWS fetch-ready runs every minute, and at once on a `jobs.enqueued` nudge. An executor whose job
 * enqueues follow-ups (a reminder sweep's notifications, a valuation's margin calls) would leave them
 * waiting for that minute: this wraps the tracker its services use, notes when a run created a job that
 * is due now, and after the run, when its transactions have committed, sends one nudge. Best effort: a
 * lost nudge only delays the follow-ups to the next minute.
 */
export class FollowUpNudge {
  private createdDueJob = false;
  /** The tracker to hand the services: enqueues go to the real one and are noted. */
  readonly tracker: ServiceTracker;

  constructor(
    inner: ServiceTracker,
    private readonly waker: FetchReadyWaker,
  ) {
    this.tracker = {
      get clock() {
        return inner.clock;
      },
      enqueueUntyped: async (jobs, options) => {
        const results = await inner.enqueueUntyped(jobs, options);
        if (createdJobDueNow(results, inner.clock.now() ?? new Date())) this.createdDueJob = true;
        return results;
      },
      pruneFinished: (options) => inner.pruneFinished(options),
    };
  }

  /** After a run: nudges fetch-ready once if the run created a due job. Never throws. */
  async afterRun(onError: WakeErrorReporter): Promise<boolean> {
    if (!this.createdDueJob) return false;
    this.createdDueJob = false;
    return this.waker.wake(onError);
  }
}
