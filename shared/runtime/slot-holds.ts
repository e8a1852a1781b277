import { errorMessage } from '../jobs/errors.js';
import type { ClaimedJob } from '../jobs/model.js';
import type { JobTypeMap } from '../jobs/registry.js';
import type { JobTracker } from '../jobs/tracker.js';
import type { Logger } from './logger.js';
import type { TypeSlots } from './type-slots.js';

/**
 * Keeps a worker's holds on the slots of limited types honest between its claims (a claim settles them
 * itself, unless it claims within them): renews them when they are due for confirmation and no claim
 * settled them (long jobs, or claims within holds only), and gives up those it no longer needs a moment
 * after its last job of their type, which wakes the workers waiting for them. One statement about the
 * slots at a time: a claim waits for a settle in flight.
 */
export class SlotHolds<M extends JobTypeMap, S> {
  private timer: NodeJS.Timeout | undefined;
  /** A settle in flight. */
  settling: Promise<void> | null = null;

  constructor(
    readonly slots: TypeSlots,
    private readonly deps: {
      tracker: JobTracker<M, S>;
      workerId: string;
      concurrency: number;
      logger: Logger;
      isStopping: () => boolean;
      isClaiming: () => boolean;
      /** A settle answered: slots may have come free for parked jobs. */
      onSettled: () => void;
    },
  ) {}

  /** Plans the next settle: at once if holding more than kept, at a linger's end, else when due. */
  arm(): void {
    if (this.deps.isStopping()) return;
    clearTimeout(this.timer);
    if (this.slots.held.size === 0) return;
    const delay = this.slots.holdsMoreThanKept()
      ? 0
      : Math.min(
          // No sooner than a second: a settle that failed left the holds due, and is not retried in a loop.
          Math.max(1000, this.slots.confirmDueInMs()),
          (this.slots.lingerEndsInMs() ?? Number.POSITIVE_INFINITY) + 5,
        );
    this.timer = setTimeout(() => void this.settle(), delay);
    this.timer.unref?.();
  }

  disarm(): void {
    clearTimeout(this.timer);
  }

  /** Settles the holds now (renews what is worth keeping, gives up the rest; `{}` gives up all). */
  settle(keep?: Record<string, number>): Promise<void> {
    const slots = this.slots;
    if (this.settling) return this.settling;
    // A claim in flight settles the holds itself (and re-arms the timer when it answers).
    if (this.deps.isClaiming()) return Promise.resolve();
    const at = performance.now();
    const kept = keep ?? slots.keep();
    slots.capHeld(kept);
    this.settling = this.deps.tracker
      .settleWorkerSlots(this.deps.workerId, this.deps.concurrency, kept)
      .then(
        (held) => {
          // A claim that began after this settle answered already: its answer is newer.
          if (slots.confirmedAt <= at) slots.update(held, at);
        },
        (err: unknown) =>
          this.deps.logger.warn('could not renew the slots of limited types', { error: errorMessage(err) }),
      )
      .finally(() => {
        this.settling = null;
        this.arm();
        this.deps.onSettled();
      });
    return this.settling;
  }

  /** On stop: after any settle in flight, gives every slot back. */
  async giveUpAll(): Promise<void> {
    clearTimeout(this.timer);
    if (this.slots.held.size === 0) return;
    await this.settling;
    await this.settle({});
  }

  /**
   * Whether a claim took a held type's whole share (what `lana_jobs_claim_slotted` lets a worker claim ahead
   * of a type it holds slots of): then more of that type may be due, and the worker claims again as its
   * queue runs low, instead of waiting to be woken.
   */
  claimedAShare(claimed: readonly ClaimedJob[], room: number): boolean {
    if (claimed.length === 0) return false;
    const byType = new Map<string, number>();
    for (const job of claimed)
      if (this.slots.isLimited(job.jobType)) byType.set(job.jobType, (byType.get(job.jobType) ?? 0) + 1);
    for (const [type, n] of byType) {
      const held = this.slots.held.get(type) ?? 0;
      if (held > 0 && n >= Math.ceil((room * held) / this.deps.concurrency)) return true;
    }
    return false;
  }
}
