import type { ClaimedJob } from '../jobs/model.js';
import type { EagerSlot, EagerStarter } from '../jobs/tracker.js';

/**
 * Where an eager job would run: `room`, a slot free here (of a limited type, one the worker holds and no
 * job uses); `take-slot`, a limited type none of whose held slots is free here, while the worker may hold
 * one more: the insert takes a free slot of the type for the worker, or starts nothing.
 */
export type EagerRoom = 'room' | 'take-slot';

/** What an eager start needs of its worker. */
export interface EagerHost {
  /** The worker's id: the holder of the slots it takes. */
  readonly workerId: string;
  /** Where a job of `jobType` enqueued in this process now would run, if it would otherwise find the worker idle. */
  roomFor(jobType: string): EagerRoom | undefined;
  /** Counts a slot promised to an enqueue (+1), or settled (-1). */
  reserve(jobType: string, delta: 1 | -1): void;
  /**
   * The job was inserted already claimed by this worker: start it (or hand it back when stopping).
   * `tookSlot`: the insert took a slot of its type for the worker.
   */
  startClaimed(job: ClaimedJob, tookSlot: boolean): void;
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
      const room = host.roomFor(jobType);
      if (room === undefined) return undefined;
      host.reserve(jobType, 1);
      let settled = false;
      const settle = () => {
        if (settled) throw new Error('an eager slot was settled twice; this is a bug');
        settled = true;
        host.reserve(jobType, -1);
      };
      return {
        ...(room === 'take-slot' ? { takeSlotFor: host.workerId } : {}),
        start: (job) => {
          settle();
          host.startClaimed(job, room === 'take-slot');
        },
        cancel: () => {
          settle();
          host.unused();
        },
      };
    },
  };
}
