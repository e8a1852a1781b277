import type { ClaimedJob } from '../jobs/model.js';
import type { EagerSlot, EagerStarter } from '../jobs/tracker.js';

/** What an eager start needs of its worker. */
export interface EagerHost {
  /** Whether a job of `jobType` enqueued in this process now would otherwise find the worker idle. */
  hasIdleRoomFor(jobType: string): boolean;
  /** Counts a slot promised to an enqueue (+1), or settled (-1). */
  reserve(jobType: string, delta: 1 | -1): void;
  /** The job was inserted already claimed by this worker: start it (or hand it back when stopping). */
  startClaimed(job: ClaimedJob): void;
  /** A promised slot went unused (the insert failed, or the job was not due). */
  unused(): void;
}

/**
 * Eager start: a slot for a job being enqueued in this process, only when this worker would otherwise
 * sit idle on it: running, a slot free, nothing queued locally, and the last claim found no more due jobs
 * (so the new job jumps no known backlog).
 *
 * A claim in flight does not stop it. An idle worker polls every couple of seconds, and a job enqueued
 * during that poll would otherwise wait for the poll, then its own notification and a second claim: two
 * commits instead of one. What the poll brings back takes the other free slots; should it fill them, one
 * of its jobs waits for the eager job, exactly as if the enqueue had come a moment before the poll.
 */
export function eagerStarterFor(host: EagerHost): EagerStarter {
  return {
    reserve: (jobType: string): EagerSlot | undefined => {
      if (!host.hasIdleRoomFor(jobType)) return undefined;
      host.reserve(jobType, 1);
      let settled = false;
      const settle = () => {
        if (settled) throw new Error('an eager slot was settled twice; this is a bug');
        settled = true;
        host.reserve(jobType, -1);
      };
      return {
        start: (job) => {
          settle();
          host.startClaimed(job);
        },
        cancel: () => {
          settle();
          host.unused();
        },
      };
    },
  };
}
