import { randomUUID } from 'node:crypto';
import type { AbortableRun, DispatchOptions, JobDispatcher, JobResult } from '../jobs/dispatcher.js';
import { errorMessage } from '../jobs/errors.js';
import type { ClaimedJob } from '../jobs/model.js';
import type { JobTypeMap } from '../jobs/registry.js';
import type {
  CompletedAttempt,
  EagerSlot,
  EagerStarter,
  FailedAttempt,
  FailResult,
  JobTracker,
} from '../jobs/tracker.js';
import type { RecurringSchedule } from '../schedules/definitions.js';
import { ClaimSizer } from './claim-sizer.js';
import { LeaseRescuer } from './lease-rescuer.js';
import { LocalQueue } from './local-queue.js';
import { type Logger, silentLogger } from './logger.js';
import { ScheduleFirer } from './schedule-firer.js';
import { DEFAULT_SLOT_LINGER_MS, SLOT_HEARTBEAT_MS, TypeSlots } from './type-slots.js';

/** The abort reason of runs interrupted by `stop()`. */
const SHUTDOWN = new Error('interrupted: the worker shut down during the attempt');

/** True if `promise` settles within `ms`. */
function settlesWithin(promise: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  return Promise.race([promise.then(() => true), timeout]).finally(() => clearTimeout(timer));
}

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
   * Without it the worker polls.
   */
  listen?: (onNotify: () => void) => Promise<() => Promise<void>>;
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

interface Finished {
  job: ClaimedJob;
  result: JobResult;
  /** The run was interrupted by shutdown: retry at once rather than after a backoff. */
  interrupted: boolean;
}

/**
 * The local runtime's worker. It claims due jobs in batches into a local queue (one statement per batch),
 * runs them in process with a concurrency limit, and records results in batches (one statement per
 * batch of completions, one per batch of failures) while the next runs proceed. An idle worker wakes on
 * LISTEN/NOTIFY within milliseconds and polls as a fallback. Beside it run the services it starts and
 * stops: the rescuer of expired leases (`LeaseRescuer`) and the schedule firer (`ScheduleFirer`); how much
 * it claims is the `ClaimSizer`'s call. A job enqueued in its own process while it idles skips the queue: it is inserted
 * already claimed by this worker and starts when that insert commits (eager start, `eagerStart`).
 *
 * `stop()` stops claiming, hands back the queued jobs that never started, lets running jobs finish within
 * the grace period, interrupts the rest (recorded as interrupted attempts, due again at once, once their
 * executors stop) and flushes every result: no job is left running. Except one whose executor ignores
 * its abort signal for another grace period: that job is left `running` and nothing is recorded for it,
 * so its lease expires and the rescuer runs it again, rather than another worker at once, beside it.
 */
export class Worker<M extends JobTypeMap, S> {
  private readonly tracker: JobTracker<M, S>;
  private readonly dispatcher: JobDispatcher<M, S>;
  private readonly concurrency: number;
  private readonly claimBatchSize: number;
  private readonly pollIntervalMs: number;
  private readonly shutdownGraceMs: number;
  private readonly logger: Logger;

  private readonly queue = new LocalQueue();
  /** This worker's id: the holder of the slots it takes of types with a concurrency limit. */
  readonly id = randomUUID();
  /** The types with a limit and this worker's slots of them; null when no type has a limit. */
  private readonly slots: TypeSlots | null;
  /** Jobs of a limited type taken from the queue while the worker ran as many of them as it holds slots. */
  private readonly parked = new Map<string, { job: ClaimedJob; claimedAt: number }[]>();
  private parkedCount = 0;
  private slotTimer: NodeJS.Timeout | undefined;
  private settlingSlots: Promise<void> | null = null;
  /** Running jobs by id, each with the handle that interrupts it. */
  private readonly running = new Map<string, AbortableRun | null>();
  /** One options object for every dispatch: the run registers itself as it starts. */
  private readonly dispatchOptions: DispatchOptions = {
    onStart: (run) => {
      this.running.set(run.job.id, run);
    },
  };
  private readonly toRecord: Finished[] = [];
  /** Slots promised to eager enqueues whose insert has not answered yet. */
  private reserved = 0;
  private detachEager: (() => void) | undefined;
  /** Releases in flight; `stop()` waits for them, so no claim it hands back is still `running` after it. */
  private readonly releasing = new Set<Promise<void>>();
  private flushing: Promise<void> | null = null;
  /** `killed`: the process is taken to have died; results arriving afterwards are dropped. */
  private mode: 'created' | 'running' | 'stopping' | 'killed' = 'created';
  /** `woken`: a wake-up arrived while the claim was in flight, so claim again after it. */
  private claim: 'idle' | 'in-flight' | 'in-flight-woken' = 'idle';
  /**
   * What the last claim that answered said of the queue: `full` (more may be due), `short` (the worker had
   * taken every job due then: caught up), `failed`; `none` before the first.
   */
  private lastClaim: 'none' | 'full' | 'short' | 'failed' = 'none';
  /** A wake-up (a notification, a rescue) arrived since the last claim answered: more may be due. */
  private wokenSinceClaim = false;
  /** The last claim left due jobs behind (a key or a type at its limit, rows another claimer held). */
  private leftBehind = false;
  private readonly sizer: ClaimSizer;
  private readonly rescuer: LeaseRescuer<M, S>;
  private readonly scheduler: ScheduleFirer<M, S>;
  private pollTimer: NodeJS.Timeout | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private idleWaiters: (() => void)[] = [];
  /** Woken on every change `stop()` may be waiting for: a claim answering, a slot freed, a run ending. */
  private changeWaiters: (() => void)[] = [];
  private consecutiveErrors = 0;

  constructor(private readonly options: WorkerOptions<M, S>) {
    this.tracker = options.tracker;
    this.dispatcher = options.dispatcher;
    this.concurrency = options.concurrency ?? 10;
    this.claimBatchSize = options.claimBatchSize ?? 1000;
    this.pollIntervalMs = options.pollIntervalMs ?? 2000;
    this.shutdownGraceMs = options.shutdownGraceMs ?? 10_000;
    this.logger = options.logger ?? silentLogger;
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1 || this.concurrency > 1000) {
      throw new Error('concurrency must be an integer from 1 to 1000');
    }
    if (!Number.isInteger(this.claimBatchSize) || this.claimBatchSize < 1) {
      throw new Error('claimBatchSize must be a positive integer');
    }
    this.sizer = new ClaimSizer(this.concurrency, this.claimBatchSize);
    const limited = new Set(
      this.tracker.registry
        .list()
        .filter((t) => t.concurrency !== undefined)
        .map((t) => t.type),
    );
    this.slots =
      limited.size > 0 ? new TypeSlots(limited, options.slotLingerMs ?? DEFAULT_SLOT_LINGER_MS) : null;
    this.rescuer = new LeaseRescuer({
      tracker: this.tracker,
      intervalMs: options.rescueIntervalMs ?? 15_000,
      logger: this.logger,
      onRescued: () => this.wake(),
    });
    this.scheduler = new ScheduleFirer({
      tracker: this.tracker,
      schedules: options.schedules ?? [],
      intervalMs: options.scheduleIntervalMs ?? 10_000,
      logger: this.logger,
    });
  }

  private get stopping(): boolean {
    return this.mode === 'stopping' || this.mode === 'killed';
  }

  private get killed(): boolean {
    return this.mode === 'killed';
  }

  /** Whether a wake-up arrived while the claim in flight was out (read as it answers). */
  private claimWasWoken(): boolean {
    return this.claim === 'in-flight-woken';
  }

  private get fetching(): boolean {
    return this.claim !== 'idle';
  }

  /** More jobs may be due than the worker holds: claim when the queue runs low. */
  private get mayHaveMore(): boolean {
    return this.lastClaim === 'none' || this.lastClaim === 'full' || this.wokenSinceClaim;
  }

  /** Resolves at the next change `stop()` may be waiting for. */
  private nextChange(): Promise<void> {
    return new Promise((resolve) => this.changeWaiters.push(resolve));
  }

  private changed(): void {
    if (this.changeWaiters.length === 0) return;
    const waiters = this.changeWaiters;
    this.changeWaiters = [];
    for (const w of waiters) w();
  }

  /** Waits, change by change, until `condition` holds. */
  private async until(condition: () => boolean): Promise<void> {
    while (!condition()) await this.nextChange();
  }

  /** Starts working: listen, fire due schedules, rescue, claim. */
  async start(): Promise<void> {
    if (this.mode !== 'created') throw new Error('worker already started');
    this.mode = 'running';
    if (this.options.listen) this.unlisten = await this.options.listen(() => this.wake());
    // Two sessions: the one an idle worker's poll holds, and one for an enqueue or an eager start beside it.
    await this.tracker.warmUp(2);
    if (this.options.eagerStart ?? true)
      this.detachEager = this.tracker.attachEagerStarter(this.eagerStarter);
    await this.scheduler.start();
    await this.rescuer.start();
    this.wake();
  }

  /** Asks for a claim now (new jobs were enqueued, or a lease was rescued). */
  wake(): void {
    if (this.stopping) return;
    if (this.fetching) {
      this.claim = 'in-flight-woken';
      return;
    }
    this.wokenSinceClaim = true;
    void this.fetch();
  }

  /** Resolves when the local queue is empty, nothing runs and every result is recorded. */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  get stats() {
    return {
      queued: this.queue.length + this.parkedCount,
      running: this.running.size,
      unrecorded: this.toRecord.length,
    };
  }

  private isIdle(): boolean {
    return (
      !this.fetching &&
      this.queue.length === 0 &&
      this.parkedCount === 0 &&
      this.running.size === 0 &&
      this.reserved === 0 &&
      this.toRecord.length === 0 &&
      !this.flushing
    );
  }

  private checkIdle(): void {
    if (this.idleWaiters.length > 0 && this.isIdle()) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  private async fetch(): Promise<void> {
    if (this.stopping || this.fetching) return;
    // Claim only what the slots can soon use, so other workers get a share and leases stay meaningful.
    const room = this.sizer.room(this.queue.length + this.parkedCount + this.running.size + this.reserved);
    if (room < 1) return;
    this.claim = 'in-flight';
    clearTimeout(this.pollTimer);
    let claimed: ClaimedJob[] = [];
    let nextDueAt: Date | null | undefined;
    let leftBehind = false;
    const claimStart = performance.now();
    try {
      const slots = this.slots;
      // One statement about the slots at a time: a settle in flight answers first.
      if (this.settlingSlots) await this.settlingSlots;
      const keep = slots?.keep();
      if (slots && keep) slots.capHeld(keep);
      const answer = await this.tracker.claimForWorker(
        room,
        slots && keep ? { worker: this.id, concurrency: this.concurrency, inHand: keep } : undefined,
      );
      ({ jobs: claimed, nextDueAt, leftBehind } = answer);
      this.leftBehind = leftBehind;
      if (slots) {
        slots.update(answer.held, claimStart);
        for (const job of claimed) slots.queuedDelta(job.jobType, 1);
        // Claimed up to a held type's share: more of it may be due, so claim again as the queue runs low.
        if (leftBehind && this.claimedAShare(claimed, room)) nextDueAt = undefined;
        this.armSlotTimer();
      }
      this.consecutiveErrors = 0;
      this.sizer.claimed(claimStart, performance.now());
    } catch (err) {
      this.consecutiveErrors++;
      this.logger.error('claim failed', { error: errorMessage(err), retryInMs: this.backoffMs() });
    }
    const wokenDuringClaim = this.claimWasWoken();
    this.claim = 'idle';
    this.changed();
    if (this.stopping) {
      // Claimed while stopping: hand them straight back.
      if (claimed.length > 0) {
        for (const job of claimed) this.slots?.queuedDelta(job.jobType, -1);
        await this.releaseUnstarted(claimed);
      }
      this.checkIdle();
      return;
    }
    this.queue.push(claimed, performance.now());
    this.lastClaim =
      this.consecutiveErrors > 0
        ? 'failed'
        : claimed.length < room && nextDueAt !== undefined
          ? 'short'
          : 'full';
    // More may be waiting if the batch came back full, or a wake-up arrived during the claim.
    this.wokenSinceClaim = this.consecutiveErrors === 0 && wokenDuringClaim;
    this.fillSlots();
    if (this.consecutiveErrors > 0) {
      this.pollTimer = setTimeout(() => this.wake(), this.backoffMs());
    } else if (!this.mayHaveMore) {
      this.scheduleNextPoll(nextDueAt);
    }
    this.checkIdle();
  }

  /**
   * Whether a claim took a held type's whole share (what `lana_jobs_claim_slotted` lets a worker claim ahead
   * of a type it holds slots of): then more of that type may be due, and the worker claims again as its
   * queue runs low, instead of waiting to be woken.
   */
  private claimedAShare(claimed: readonly ClaimedJob[], room: number): boolean {
    const slots = this.slots;
    if (!slots || claimed.length === 0) return false;
    const byType = new Map<string, number>();
    for (const job of claimed)
      if (slots.isLimited(job.jobType)) byType.set(job.jobType, (byType.get(job.jobType) ?? 0) + 1);
    for (const [type, n] of byType) {
      const held = slots.held.get(type) ?? 0;
      if (held > 0 && n >= Math.ceil((room * held) / this.concurrency)) return true;
    }
    return false;
  }

  /**
   * Keeps the slot holds honest between claims: renews them before they expire while the worker holds
   * slots and claims nothing (long jobs), and gives up those it no longer needs a moment after its last
   * job of their type (waking the workers that wait for them).
   */
  private armSlotTimer(): void {
    const slots = this.slots;
    if (!slots || this.stopping) return;
    clearTimeout(this.slotTimer);
    if (slots.held.size === 0) return;
    // Give up what is not worth keeping now, a lingering hold when its linger ends, else renew in time.
    const delay = slots.holdsMoreThanKept()
      ? 0
      : Math.min(SLOT_HEARTBEAT_MS, (slots.lingerEndsInMs() ?? Number.POSITIVE_INFINITY) + 5);
    this.slotTimer = setTimeout(() => void this.settleSlots(), delay);
    this.slotTimer.unref?.();
  }

  /** Settles the slot holds now (renews what is worth keeping, gives up the rest). */
  private settleSlots(keep?: Record<string, number>): Promise<void> {
    const slots = this.slots;
    if (!slots) return Promise.resolve();
    if (this.settlingSlots) return this.settlingSlots;
    // A claim in flight settles the holds itself (and re-arms the timer when it answers).
    if (this.fetching) return Promise.resolve();
    const at = performance.now();
    const kept = keep ?? slots.keep();
    slots.capHeld(kept);
    this.settlingSlots = this.tracker
      .settleWorkerSlots(this.id, this.concurrency, kept)
      .then(
        (held) => {
          // A claim that began after this settle answered already: its answer is newer.
          if (slots.confirmedAt <= at) slots.update(held, at);
        },
        (err: unknown) =>
          this.logger.warn('could not renew the slots of limited types', { error: errorMessage(err) }),
      )
      .finally(() => {
        this.settlingSlots = null;
        this.armSlotTimer();
        this.fillSlots();
      });
    return this.settlingSlots;
  }

  private backoffMs(): number {
    return Math.min(30_000, 250 * 2 ** Math.min(this.consecutiveErrors, 7));
  }

  /**
   * A failure just recorded may be due again before the next poll (a short backoff, a retry the executor
   * asked for in a moment): if the worker is asleep, re-plan its sleep so the retry runs on time.
   */
  private wakeForSoonRetries(failed: readonly FailResult[]): void {
    if (this.stopping || this.fetching || this.mayHaveMore) return; // a claim is coming anyway
    const now = (this.tracker.clock.now() ?? new Date()).getTime();
    if (failed.some((f) => f.status === 'retrying' && f.scheduledAt.getTime() - now < this.pollIntervalMs)) {
      this.scheduleNextPoll();
    }
  }

  /**
   * With nothing due, sleep until the next scheduled job (or the poll interval, whichever is sooner). A
   * short claim already says when that is; otherwise it is asked for.
   */
  private scheduleNextPoll(known?: Date | null): void {
    clearTimeout(this.pollTimer);
    let delay = this.pollIntervalMs;
    const nextDueAt = known === undefined ? this.tracker.nextDueAt() : Promise.resolve(known);
    nextDueAt.then(
      (next) => {
        if (this.stopping || this.fetching) return;
        if (next) {
          const now = this.tracker.clock.now() ?? new Date();
          delay = Math.max(0, Math.min(delay, next.getTime() - now.getTime() + 5));
        }
        clearTimeout(this.pollTimer);
        this.pollTimer = setTimeout(() => this.wake(), delay);
      },
      () => {
        this.pollTimer = setTimeout(() => this.wake(), delay);
      },
    );
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
  private readonly eagerStarter: EagerStarter = {
    reserve: (jobType: string): EagerSlot | undefined => {
      if (this.stopping || this.lastClaim !== 'short' || this.queue.length > 0) return undefined;
      if (this.running.size + this.reserved >= this.concurrency) return undefined;
      // A limited type starts eagerly only in a slot this worker holds and no job of it uses.
      const limited = this.slots?.isLimited(jobType) ?? false;
      if (limited && !this.slots!.hasIdleSlot(jobType)) return undefined;
      this.reserved++;
      if (limited) this.slots!.reservedDelta(jobType, 1);
      let settled = false;
      const settle = () => {
        if (settled) throw new Error('an eager slot was settled twice; this is a bug');
        settled = true;
        this.reserved--;
        if (limited) this.slots!.reservedDelta(jobType, -1);
        this.changed();
      };
      return {
        start: (job) => {
          settle();
          if (this.killed) return; // a dead process runs nothing: the lease expires and the rescuer acts
          if (this.stopping) {
            void this.releaseUnstarted([job]).finally(() => this.checkIdle());
            return;
          }
          this.running.set(job.id, null);
          this.slots?.runningDelta(job.jobType, 1);
          void this.run(job);
        },
        cancel: () => {
          settle();
          this.fillSlots();
          this.checkIdle();
        },
      };
    },
  };

  private fillSlots(): void {
    const stale: ClaimedJob[] = [];
    const slots = this.slots;
    if (slots && this.parkedCount > 0) this.startParked(slots, stale);
    while (!this.stopping && this.running.size + this.reserved < this.concurrency && this.queue.length > 0) {
      const claimedAt = this.queue.headClaimedAt;
      const job = this.queue.shift()!;
      if (!this.hasLeaseForRun(job, claimedAt)) {
        slots?.queuedDelta(job.jobType, -1);
        stale.push(job);
        continue;
      }
      if (slots?.isLimited(job.jobType)) {
        if (!this.mayStartLimited(slots, job.jobType)) {
          // Its type runs as many jobs here as this worker holds slots: it waits for one of them.
          const parked = this.parked.get(job.jobType) ?? [];
          parked.push({ job, claimedAt });
          this.parked.set(job.jobType, parked);
          this.parkedCount++;
          continue;
        }
        slots.queuedDelta(job.jobType, -1);
        slots.runningDelta(job.jobType, 1);
      }
      this.running.set(job.id, null);
      void this.run(job);
    }
    if (stale.length > 0) {
      // Waited so long in the local queue that a full run could outlive the lease: hand them back.
      this.logger.warn('releasing queued jobs whose lease ran short', { count: stale.length });
      void this.releaseUnstarted(stale).finally(() => this.wake());
    }
    if (!this.stopping && this.mayHaveMore && this.queue.length < this.sizer.lowWater && !this.fetching) {
      void this.fetch();
    }
  }

  private mayStartLimited(slots: TypeSlots, type: string): boolean {
    return slots.trusted() && (slots.running.get(type) ?? 0) < (slots.held.get(type) ?? 0);
  }

  /** Starts parked jobs (oldest claims first) of the types with a slot free here again. */
  private startParked(slots: TypeSlots, stale: ClaimedJob[]): void {
    for (const [type, waiting] of this.parked) {
      while (
        !this.stopping &&
        waiting.length > 0 &&
        this.running.size + this.reserved < this.concurrency &&
        this.mayStartLimited(slots, type)
      ) {
        const { job, claimedAt } = waiting.shift()!;
        this.parkedCount--;
        slots.queuedDelta(type, -1);
        if (!this.hasLeaseForRun(job, claimedAt)) {
          stale.push(job);
          continue;
        }
        slots.runningDelta(type, 1);
        this.running.set(job.id, null);
        void this.run(job);
      }
      if (waiting.length === 0) this.parked.delete(type);
    }
  }

  /** Empties the local queue and the parked jobs, returning what they held. */
  private drainQueued(): ClaimedJob[] {
    const all = this.queue.drain();
    for (const waiting of this.parked.values()) for (const { job } of waiting) all.push(job);
    this.parked.clear();
    this.parkedCount = 0;
    if (this.slots) for (const job of all) this.slots.queuedDelta(job.jobType, -1);
    return all;
  }

  /**
   * A queued job may start only if its lease still covers a full run: the time it has waited here
   * (measured on this process's monotonic clock, immune to clock skew) must fit in lease − timeout.
   */
  private hasLeaseForRun(job: ClaimedJob, claimedAt: number): boolean {
    const type = this.tracker.registry.get(job.jobType);
    if (!type) return true; // the dispatcher fails it at once
    const waitedMs = performance.now() - claimedAt;
    return waitedMs <= (type.leaseSeconds - type.timeoutSeconds) * 1000;
  }

  private async run(job: ClaimedJob): Promise<void> {
    const result = await this.dispatcher.dispatch(job, this.dispatchOptions);
    if (this.killed) return;
    const handle = this.running.get(job.id);
    const interrupted = handle?.abortReason === SHUTDOWN;
    // An interrupted run settles as soon as it is aborted, but recording it makes the job due at once:
    // first its executor must actually have stopped.
    if (interrupted && !(await settlesWithin(handle.executorStopped, this.shutdownGraceMs))) {
      this.running.delete(job.id);
      this.slots?.runningDelta(job.jobType, -1);
      this.changed();
      this.logger.error('an interrupted executor ignored its abort signal; leaving its job to the rescuer', {
        type: job.jobType,
        id: job.id,
        attempt: job.attempts,
        leaseExpiresAt: job.leaseExpiresAt?.toISOString(),
      });
      return;
    }
    if (this.killed) return;
    this.sizer.finished();
    this.running.delete(job.id);
    if (this.slots?.isLimited(job.jobType)) {
      this.slots.runningDelta(job.jobType, -1);
      if (this.slots.inHand(job.jobType) === 0) this.armSlotTimer();
    }
    this.changed();
    this.toRecord.push({ job, result, interrupted });
    this.scheduleFlush();
    this.fillSlots();
  }

  private scheduleFlush(): void {
    if (this.flushing) return;
    this.flushing = (async () => {
      // Let results that finish in the same turn join this batch.
      await new Promise((r) => setImmediate(r));
      // A killed worker stops retrying: a dead process records nothing (its leases expire instead).
      while (this.toRecord.length > 0 && !this.killed) {
        const batch = this.toRecord.splice(0, this.toRecord.length);
        try {
          await this.record(batch);
          this.consecutiveErrors = 0;
        } catch (err) {
          if (this.killed) break;
          // Keep the results and try again: losing them would re-run completed work after the lease expires.
          this.toRecord.unshift(...batch);
          this.consecutiveErrors++;
          this.logger.error('recording results failed', { error: errorMessage(err), jobs: batch.length });
          await new Promise((r) => setTimeout(r, this.backoffMs()));
        }
      }
    })().finally(() => {
      this.flushing = null;
      this.checkIdle();
    });
  }

  private async record(batch: Finished[]): Promise<void> {
    const completions: CompletedAttempt[] = [];
    const failures: FailedAttempt[] = [];
    for (const { job, result, interrupted } of batch) {
      const ref = { id: job.id, attempt: job.attempts, durationMs: result.durationMs };
      if (result.outcome === 'completed') completions.push(ref);
      else if (result.outcome === 'retry_later')
        failures.push({ ...ref, error: result.reason, retryAt: result.retryAt });
      else if (interrupted) {
        failures.push({
          ...ref,
          error: 'interrupted: the worker shut down during the attempt',
          interrupted: true,
        });
      } else failures.push({ ...ref, error: result.error, permanent: result.permanent });
    }
    const [completed, failed] =
      failures.length === 0
        ? [await this.tracker.completeMany(completions), []]
        : await Promise.all([this.tracker.completeMany(completions), this.tracker.failMany(failures)]);
    // A job with a per-key limit ended, which may free its key for a job the last claim had to leave due:
    // claim again now rather than at the next poll (nothing else announces a key's end).
    if (this.leftBehind && batch.some(({ job }) => this.tracker.registry.get(job.jobType)?.concurrencyKey)) {
      this.wake();
    }
    const onRecorded = this.options.onAttemptRecorded;
    // The common case: every completion applied, nothing failed, nobody listening. Nothing more to do.
    if (!onRecorded && failures.length === 0 && completed.length === completions.length) return;
    this.wakeForSoonRetries(failed);
    const completedIds = new Set(completed);
    const failedById = new Map(failed.map((f) => [f.id, f]));
    for (const { job, result } of batch) {
      const failure = failedById.get(job.id);
      const status = completedIds.has(job.id) ? 'completed' : failure ? failure.status : 'fenced_out';
      if (status === 'fenced_out') {
        this.logger.warn('result discarded: the attempt is no longer current', {
          jobId: job.id,
          attempt: job.attempts,
        });
      } else if (status === 'failed' && result.outcome === 'failed') {
        this.logger.warn('job failed for good', { jobId: job.id, type: job.jobType, error: result.error });
      }
      onRecorded?.({
        job,
        result,
        status,
        ...(failure?.status === 'retrying' ? { nextRunAt: failure.scheduledAt } : {}),
      });
    }
  }

  /** Enqueues each schedule's latest tick once (the tick's idempotency key makes repeats no-ops). */
  fireSchedules(): Promise<void> {
    return this.scheduler.fire();
  }

  private releaseUnstarted(jobs: ClaimedJob[]): Promise<void> {
    const release = this.doRelease(jobs).finally(() => this.releasing.delete(release));
    this.releasing.add(release);
    return release;
  }

  private async doRelease(jobs: ClaimedJob[]): Promise<void> {
    try {
      await this.tracker.release(
        jobs.map((j) => ({ id: j.id, attempt: j.attempts })),
        // This worker claimed them with startNow, but never ran them: uncount the attempt.
        { requireUnstarted: false },
      );
    } catch (err) {
      this.logger.error('releasing unstarted jobs failed; their leases will expire', {
        error: errorMessage(err),
        jobs: jobs.length,
      });
    }
  }

  /**
   * Simulates the process dying (fault-injection tests): timers stop, running executors are abandoned and
   * nothing is recorded or released. Their jobs stay `running` until their leases expire and a rescuer
   * picks them up, exactly as after a real crash.
   */
  async kill(): Promise<void> {
    this.mode = 'killed';
    this.detachEager?.();
    clearTimeout(this.pollTimer);
    this.rescuer.stop();
    this.scheduler.stop();
    clearTimeout(this.slotTimer);
    this.toRecord.length = 0;
    this.drainQueued();
    for (const run of this.running.values()) run?.abort(new Error('process killed'));
    this.running.clear();
    this.changed();
    await this.unlisten?.().catch(() => {});
  }

  /** Graceful stop; see the class comment. */
  async stop(): Promise<void> {
    if (this.mode !== 'running') return;
    this.mode = 'stopping';
    this.detachEager?.();
    clearTimeout(this.pollTimer);
    this.rescuer.stop();
    this.scheduler.stop();
    await this.unlisten?.().catch(() => {});
    // A claim, or an eager enqueue, in flight when stop began: its jobs are released once it answers.
    await this.until(() => !this.fetching && this.reserved === 0);
    const unstarted = this.drainQueued();
    if (unstarted.length > 0) await this.releaseUnstarted(unstarted);
    await settlesWithin(
      this.until(() => this.running.size === 0),
      this.shutdownGraceMs,
    );
    if (this.running.size > 0) {
      this.logger.warn('interrupting jobs still running after the grace period', {
        count: this.running.size,
      });
      for (const run of this.running.values()) run?.abort(SHUTDOWN);
      await this.until(() => this.running.size === 0);
    }
    while (this.flushing || this.toRecord.length > 0) {
      if (!this.flushing) this.scheduleFlush();
      await this.flushing;
    }
    // A claim that was in flight when stop began hands its jobs back after `fetching` clears: wait for it.
    while (this.releasing.size > 0) await Promise.all(this.releasing);
    // Every slot this worker holds goes back (the other workers are woken for them).
    clearTimeout(this.slotTimer);
    if (this.slots && this.slots.held.size > 0) {
      await this.settlingSlots;
      await this.settleSlots({});
    }
    this.checkIdle();
  }
}
