import type { JobDispatcher, JobResult } from '../jobs/dispatcher.js';
import type { ClaimedJob } from '../jobs/model.js';
import type { JobTypeMap } from '../jobs/registry.js';
import type { JobTracker } from '../jobs/tracker.js';
import type { RecurringSchedule } from '../schedules/definitions.js';
import type { Logger } from './logger.js';

export interface WorkerOptions<M extends JobTypeMap, S> {
  tracker: JobTracker<M, S>;
  dispatcher: JobDispatcher<M, S>;
  /** Jobs run at once. Default 10. */
  concurrency?: number;
  /**
   * The most jobs one claim statement takes into the local queue. A claim asks for what the slots finish
   * in about a second at the observed rate, between `concurrency` and this: slow jobs are claimed a few at
   * a time, fast ones in batches of this size. For fast jobs the next claim starts before the queue runs
   * dry, so up to about twice this many may be held at once. Default 1000.
   */
  claimBatchSize?: number;
  /**
   * Subscribes to "new due jobs" notifications (PostgreSQL LISTEN); returns an unsubscribe function.
   * Without it the worker polls. `onNotify` takes the notification's payload, if the source passes it
   * (the worker ignores the one that names its own slots given up).
   */
  listen?: (onNotify: (payload?: string) => void) => Promise<() => Promise<void>>;
  /**
   * Eager start (default on): a single job enqueued through this worker's tracker, due now and outside a
   * caller's transaction, while this worker has a free slot and no known backlog, is inserted already
   * claimed by this worker and starts when that insert commits: one commit instead of two, no wake-up.
   * Jobs enqueued by other processes, in batches, or while busy go through the queue as usual.
   */
  eagerStart?: boolean;
  /**
   * How long the worker keeps a slot of a limited type after its last job of that type finished, so that a
   * job enqueued in its process soon after starts at once in it (eager start). Other workers waiting for
   * the slot are woken when it is given up. Default 1000 ms.
   */
  slotLingerMs?: number;
  /** Fallback poll when nothing wakes the worker. Default 2000 ms. */
  pollIntervalMs?: number;
  /** How often expired leases are rescued. Default 15 s. */
  rescueIntervalMs?: number;
  /** Recurring schedules fired by this worker (idempotent per tick, so several workers may fire them). */
  schedules?: readonly RecurringSchedule[];
  /** How often schedules are checked. Default 10 s. */
  scheduleIntervalMs?: number;
  /**
   * On stop, how long running jobs may take to finish before they are interrupted (their abort signal
   * fires), and then how long each interrupted executor may take to stop. Default 10 s.
   */
  shutdownGraceMs?: number;
  logger?: Logger;
  /** Called after each attempt is recorded (the demo and tests watch progress through it). */
  onAttemptRecorded?: (event: AttemptEvent) => void;
}

export interface AttemptEvent {
  job: ClaimedJob;
  result: JobResult;
  /** What the table now says: completed, retrying (with its next run), failed, or fenced out. */
  status: 'completed' | 'retrying' | 'failed' | 'fenced_out';
  nextRunAt?: Date;
}
