import { randomUUID } from 'node:crypto';
import type { AbortableRun, DispatchOptions, JobDispatcher } from '../jobs/dispatcher.js';
import { errorMessage } from '../jobs/errors.js';
import type { ClaimedJob } from '../jobs/model.js';
import type { JobTypeMap } from '../jobs/registry.js';
import type { FailResult, JobTracker } from '../jobs/tracker.js';
import { ClaimSizer } from './claim-sizer.js';
import { eagerStarterFor } from './eager-start.js';
import { LeaseRescuer } from './lease-rescuer.js';
import { LocalQueue, ParkedJobs } from './local-queue.js';
import { type Logger, silentLogger } from './logger.js';
import { PollTimer } from './poll-timer.js';
import { ScheduleFirer } from './schedule-firer.js';
import { SlotHolds } from './slot-holds.js';
import { DEFAULT_SLOT_LINGER_MS, slotsGivenUpBy, TypeSlots } from './type-slots.js';
import { settlesWithin, Waiters } from './waiters.js';
import type { WorkerOptions } from './worker-options.js';
import { ErrorBackoff, WorkerReports } from './worker-reports.js';

/** The abort reason of runs interrupted by `stop()`. */
const SHUTDOWN = new Error('interrupted: the worker shut down during the attempt');

export type { AttemptEvent, WorkerOptions } from './worker-options.js';

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
  private readonly shutdownGraceMs: number;
  private readonly logger: Logger;

  private readonly queue = new LocalQueue();
  /** This worker's id: the holder of the slots it takes of types with a concurrency limit. */
  readonly id = randomUUID();
  /** The types with a limit and this worker's slots of them; null when no type has a limit. */
  private readonly slots: TypeSlots | null;
  private readonly holds: SlotHolds<M, S> | null;
  /** Jobs of a limited type taken from the queue while the worker ran as many of them as it holds slots. */
  private readonly parked = new ParkedJobs();
  /** Running jobs by id, each with the handle that interrupts it. */
  private readonly running = new Map<string, AbortableRun | null>();
  /** One options object for every dispatch: the run registers itself as it starts. */
  private readonly dispatchOptions: DispatchOptions = {
    onStart: (run) => {
      this.running.set(run.job.id, run);
    },
  };
  /** Results to record and claims to hand back. */
  private readonly reports: WorkerReports<M, S>;
  /** Slots promised to eager enqueues whose insert has not answered yet. */
  private reserved = 0;
  private detachEager: (() => void) | undefined;
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
  private readonly poll: PollTimer<M, S>;
  private unlisten: (() => Promise<void>) | undefined;
  private readonly idleWaiters = new Waiters();
  /** Woken on every change `stop()` may be waiting for: a claim answering, a slot freed, a run ending. */
  private readonly changes = new Waiters();
  private readonly errors = new ErrorBackoff();

  constructor(private readonly options: WorkerOptions<M, S>) {
    this.tracker = options.tracker;
    this.dispatcher = options.dispatcher;
    this.concurrency = options.concurrency ?? 10;
    this.claimBatchSize = options.claimBatchSize ?? 1000;
    this.shutdownGraceMs = options.shutdownGraceMs ?? 10_000;
    this.logger = options.logger ?? silentLogger;
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1 || this.concurrency > 1000) {
      throw new Error('concurrency must be an integer from 1 to 1000');
    }
    if (!Number.isInteger(this.claimBatchSize) || this.claimBatchSize < 1) {
      throw new Error('claimBatchSize must be a positive integer');
    }
    this.sizer = new ClaimSizer(this.concurrency, this.claimBatchSize);
    this.poll = new PollTimer({
      tracker: this.tracker,
      intervalMs: options.pollIntervalMs ?? 2000,
      wake: () => this.wake(),
      isBusy: () => this.stopping || this.fetching,
    });
    const limited = new Set(
      this.tracker.registry
        .list()
        .filter((t) => t.concurrency !== undefined)
        .map((t) => t.type),
    );
    this.slots =
      limited.size > 0 ? new TypeSlots(limited, options.slotLingerMs ?? DEFAULT_SLOT_LINGER_MS) : null;
    this.holds = this.slots
      ? new SlotHolds(this.slots, {
          tracker: this.tracker,
          workerId: this.id,
          concurrency: this.concurrency,
          logger: this.logger,
          isStopping: () => this.stopping,
          isClaiming: () => this.fetching,
          onSettled: () => this.fillSlots(),
        })
      : null;
    this.reports = new WorkerReports({
      tracker: this.tracker,
      logger: this.logger,
      backoff: this.errors,
      isKilled: () => this.killed,
      onFailed: (failed) => this.wakeForSoonRetries(failed),
      onFlushed: () => this.checkIdle(),
      // A job with a per-key limit ended, which may free its key for a job the last claim had to leave
      // due: claim again now rather than at the next poll (nothing else announces a key's end).
      onKeyedJobsEnded: () => {
        if (this.leftBehind) this.wake();
      },
      onAttemptRecorded: options.onAttemptRecorded,
    });
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

  /** Starts working: listen, fire due schedules, rescue, claim. */
  async start(): Promise<void> {
    if (this.mode !== 'created') throw new Error('worker already started');
    this.mode = 'running';
    if (this.options.listen) {
      // Slots this worker gave up wake the others (migration 0020 names the worker): not itself.
      const own = slotsGivenUpBy(this.id);
      this.unlisten = await this.options.listen((payload) => {
        if (payload !== own) this.wake();
      });
    }
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
    return this.isIdle() ? Promise.resolve() : this.idleWaiters.next();
  }

  get stats() {
    return {
      queued: this.queue.length + this.parked.length,
      running: this.running.size,
      unrecorded: this.reports.unrecorded,
    };
  }

  private isIdle(): boolean {
    return (
      !this.fetching &&
      this.queue.length === 0 &&
      this.parked.length === 0 &&
      this.running.size === 0 &&
      this.reserved === 0 &&
      !this.reports.busy
    );
  }

  private checkIdle(): void {
    if (this.idleWaiters.waiting && this.isIdle()) this.idleWaiters.notify();
  }

  private async fetch(): Promise<void> {
    if (this.stopping || this.fetching) return;
    // Claim only what the slots can soon use, so other workers get a share and leases stay meaningful.
    const room = this.sizer.room(this.queue.length + this.parked.length + this.running.size + this.reserved);
    if (room < 1) return;
    this.claim = 'in-flight';
    this.poll.clear();
    let claimed: ClaimedJob[] = [];
    let nextDueAt: Date | null | undefined;
    let leftBehind = false;
    const claimStart = performance.now();
    try {
      const slots = this.slots;
      // One statement about the slots at a time: a settle in flight answers first.
      if (this.holds?.settling) await this.holds.settling;
      // One reading of the hand: what the claim is told and what the worker counts on agree.
      const hand = slots?.forClaim();
      const answer = await this.tracker.claimForWorker(
        room,
        hand ? { worker: this.id, concurrency: this.concurrency, ...hand } : undefined,
      );
      ({ jobs: claimed, nextDueAt, leftBehind } = answer);
      this.leftBehind = leftBehind;
      if (slots) {
        slots.update(answer.held, hand?.settle ? claimStart : undefined);
        if (answer.missedWithinHolds) slots.missedWithinHolds();
        slots.queuedJobs(claimed);
        // Claimed up to a held type's share: more of it may be due, so claim again as the queue runs low.
        if (leftBehind && this.holds!.claimedAShare(claimed, room)) nextDueAt = undefined;
        this.holds!.arm();
      }
      this.errors.succeeded();
      this.sizer.claimed(claimStart, performance.now());
    } catch (err) {
      this.logger.error('claim failed', { error: errorMessage(err), retryInMs: this.errors.failed() });
    }
    const wokenDuringClaim = this.claimWasWoken();
    this.claim = 'idle';
    this.changes.notify();
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
      this.errors.count > 0 ? 'failed' : claimed.length < room && nextDueAt !== undefined ? 'short' : 'full';
    // More may be waiting if the batch came back full, or a wake-up arrived during the claim.
    this.wokenSinceClaim = this.errors.count === 0 && wokenDuringClaim;
    this.fillSlots();
    if (this.errors.count > 0) {
      this.poll.retryIn(this.errors.ms);
    } else if (!this.mayHaveMore) {
      this.poll.sleepUntilNextDue(nextDueAt);
    }
    this.checkIdle();
  }

  /** A failure just recorded may be due again before the next poll: unless a claim is coming anyway. */
  private wakeForSoonRetries(failed: readonly FailResult[]): void {
    if (this.stopping || this.fetching || this.mayHaveMore) return;
    this.poll.afterFailures(failed);
  }

  /** Eager start (see `eagerStarterFor`): what the worker says of its room, and how it starts the job. */
  private readonly eagerStarter = eagerStarterFor({
    workerId: this.id,
    roomFor: (jobType) => {
      if (this.stopping || this.lastClaim !== 'short' || this.queue.length > 0) return undefined;
      if (this.running.size + this.reserved >= this.concurrency) return undefined;
      const slots = this.slots;
      if (!slots?.isLimited(jobType) || slots.hasIdleSlot(jobType)) return 'room';
      // No held slot free: the insert takes one, if the worker may hold more and no job here waits for one.
      const mayTake = this.parked.length === 0 && (slots.held.get(jobType) ?? 0) < this.concurrency;
      return mayTake ? 'take-slot' : undefined;
    },
    reserve: (jobType, delta) => {
      this.reserved += delta;
      if (this.slots?.isLimited(jobType)) this.slots.reservedDelta(jobType, delta);
      if (delta < 0) this.changes.notify();
    },
    startClaimed: (job, tookSlot) => {
      if (this.killed) return; // a dead process runs nothing: the lease expires and the rescuer acts
      if (tookSlot) this.slots?.tookSlot(job.jobType);
      if (this.stopping) {
        void this.releaseUnstarted([job]).finally(() => this.checkIdle());
        return;
      }
      this.running.set(job.id, null);
      this.slots?.runningDelta(job.jobType, 1);
      void this.run(job);
    },
    unused: () => {
      this.fillSlots();
      this.checkIdle();
    },
  });

  private fillSlots(): void {
    const stale: ClaimedJob[] = [];
    const slots = this.slots;
    const now = performance.now();
    if (slots && this.parked.length > 0) this.startParked(slots, stale, now);
    while (!this.stopping && this.running.size + this.reserved < this.concurrency && this.queue.length > 0) {
      const claimedAt = this.queue.headClaimedAt;
      const job = this.queue.shift()!;
      if (!this.hasLeaseForRun(job, claimedAt, now)) {
        slots?.queuedDelta(job.jobType, -1);
        stale.push(job);
        continue;
      }
      if (slots?.isLimited(job.jobType)) {
        if (!slots.mayStart(job.jobType, now)) {
          // Its type runs as many jobs here as this worker holds slots: it waits for one of them.
          this.parked.park(job, claimedAt);
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

  /** Starts parked jobs (oldest claims first) of the types with a slot free here again. */
  private startParked(slots: TypeSlots, stale: ClaimedJob[], now: number): void {
    const mayStart = (type: string) =>
      !this.stopping && this.running.size + this.reserved < this.concurrency && slots.mayStart(type, now);
    for (const { job, claimedAt } of this.parked.take(mayStart)) {
      slots.queuedDelta(job.jobType, -1);
      if (!this.hasLeaseForRun(job, claimedAt, now)) {
        stale.push(job);
        continue;
      }
      slots.runningDelta(job.jobType, 1);
      this.running.set(job.id, null);
      void this.run(job);
    }
  }

  /** Empties the local queue and the parked jobs, returning what they held. */
  private drainQueued(): ClaimedJob[] {
    const all = [...this.queue.drain(), ...this.parked.drain()];
    if (this.slots) for (const job of all) this.slots.queuedDelta(job.jobType, -1);
    return all;
  }

  /**
   * A queued job may start only if its lease still covers a full run: the time it has waited here
   * until `now` (this process's monotonic clock, immune to clock skew) must fit in lease − timeout.
   */
  private hasLeaseForRun(job: ClaimedJob, claimedAt: number, now: number): boolean {
    const type = this.tracker.registry.get(job.jobType);
    if (!type) return true; // the dispatcher fails it at once
    const waitedMs = now - claimedAt;
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
      this.changes.notify();
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
      if (this.slots.inHand(job.jobType) === 0) this.holds?.arm();
    }
    this.changes.notify();
    this.reports.add({ job, result, interrupted });
    this.fillSlots();
  }

  /** Enqueues each schedule's latest tick once (the tick's idempotency key makes repeats no-ops). */
  fireSchedules(): Promise<void> {
    return this.scheduler.fire();
  }

  private releaseUnstarted(jobs: ClaimedJob[]): Promise<void> {
    return this.reports.releaseUnstarted(jobs);
  }

  /**
   * Simulates the process dying (fault-injection tests): timers stop, running executors are abandoned and
   * nothing is recorded or released. Their jobs stay `running` until their leases expire and a rescuer
   * picks them up, exactly as after a real crash.
   */
  async kill(): Promise<void> {
    this.mode = 'killed';
    this.detachEager?.();
    this.poll.clear();
    this.rescuer.stop();
    this.scheduler.stop();
    this.holds?.disarm();
    this.reports.dropUnrecorded();
    this.drainQueued();
    for (const run of this.running.values()) run?.abort(new Error('process killed'));
    this.running.clear();
    this.changes.notify();
    await this.unlisten?.().catch(() => {});
  }

  /** Graceful stop; see the class comment. */
  async stop(): Promise<void> {
    if (this.mode !== 'running') return;
    this.mode = 'stopping';
    this.detachEager?.();
    this.poll.clear();
    this.rescuer.stop();
    this.scheduler.stop();
    await this.unlisten?.().catch(() => {});
    // A claim, or an eager enqueue, in flight when stop began: its jobs are released once it answers.
    await this.changes.until(() => !this.fetching && this.reserved === 0);
    const unstarted = this.drainQueued();
    if (unstarted.length > 0) await this.releaseUnstarted(unstarted);
    await settlesWithin(
      this.changes.until(() => this.running.size === 0),
      this.shutdownGraceMs,
    );
    if (this.running.size > 0) {
      this.logger.warn('interrupting jobs still running after the grace period', {
        count: this.running.size,
      });
      for (const run of this.running.values()) run?.abort(SHUTDOWN);
      await this.changes.until(() => this.running.size === 0);
    }
    await this.reports.flushAll();
    // Every slot this worker holds goes back (the other workers are woken for them).
    await this.holds?.giveUpAll();
    this.checkIdle();
  }
}
