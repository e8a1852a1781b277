import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { dataApiDatabaseFromEnv } from '../db/data-api-driver.js';
import type { Database } from '../db/port.js';
import type { Clock } from '../jobs/clock.js';
import { createdJobDueNow } from '../jobs/enqueue.js';
import type { InTransaction, JobTypeMap, JobTypeRegistry } from '../jobs/registry.js';
import { type EnqueueResult, JobTracker, type NewJob, type UntypedNewJob } from '../jobs/tracker.js';
import { createEventBridgePublisher } from './eventbridge-publisher.js';
import { type JobPublisher, publishWithRetry, toJobReadyEvent } from './fetch-ready.js';
import { defaultTypeConcurrency } from './type-limits.js';
import { FetchReadyWaker, NUDGE_WINDOW_MS } from './waker.js';

/** How long an enqueue waits for its nudge to be accepted before it reports it failed. */
const NUDGE_TIMEOUT_MS = 3_000;

export interface AwsJobClientOptions<M extends JobTypeMap, S> {
  registry: JobTypeRegistry<M, S>;
  /** Default: the RDS Data API named by DATA_API_RESOURCE_ARN, DATA_API_SECRET_ARN, DATA_API_DATABASE. */
  db?: Database;
  /**
   * The jobs bus (the stack's `BusName` output). Default: JOBS_BUS_NAME; unset, nothing is nudged. A name
   * that does not exist is not reported by EventBridge: jobs then start at fetch-ready's next minute.
   */
  busName?: string;
  eventBridge?: EventBridgeClient;
  /**
   * Nudges from this client are coalesced: at most one per window (default `NUDGE_WINDOW_MS`, 1 s), the
   * fetch-ready run it wakes claiming again at the window's end. 0 sends one per enqueue.
   */
  nudgeWindowMs?: number;
  /** The clock the nudge window is measured on. Default `Date.now`. */
  nowMs?: () => number;
  /**
   * Start a lone due job at once (default true): the first single enqueue of a nudge window claims its
   * type's next due job itself (within the type's limit, under a dispatch lease, as fetch-ready claims)
   * and publishes its event to the executor, instead of waking fetch-ready. The rest of the window nudges
   * as before, so a burst costs one extra claim per window.
   */
  startDueJobs?: boolean;
  /** The tracker's clock (tests and the simulator inject one). Default: the database's. */
  clock?: Clock;
  /** A nudge that failed (the job is enqueued all the same and starts at fetch-ready's next minute). */
  onNudgeError?: (error: unknown) => void;
  env?: Record<string, string | undefined>;
}

/**
 * Enqueuing from application code on AWS (an API's Lambda, a container beside the stack). On AWS nothing
 * listens for the insert's NOTIFY: fetch-ready runs every minute, and at once on a `jobs.enqueued` event.
 * This client enqueues through the same tracker as everything else and, after an enqueue that created a
 * job due now, sends that event, so the job starts within about a second instead of within a minute.
 *
 * Inside your own transaction (`{ db: tx }`) the job is not visible until you commit, so nothing is sent:
 * call `wakeWorkers()` after the commit. A failed nudge never fails the enqueue (it is reported to
 * `onNudgeError`): the job is committed and the next minute's run takes it.
 */
export class AwsJobClient<M extends JobTypeMap = JobTypeMap, S = unknown> {
  readonly tracker: JobTracker<M, S>;
  private readonly waker: FetchReadyWaker | undefined;
  private readonly onNudgeError: (error: unknown) => void;
  private readonly ownsDb: boolean;
  private readonly ownEventBridge: EventBridgeClient | undefined;
  private readonly publisher: JobPublisher | undefined;
  private readonly windowMs: number;
  private readonly nowMs: () => number;
  private lastStartAt = Number.NEGATIVE_INFINITY;

  constructor(options: AwsJobClientOptions<M, S>) {
    const env = options.env ?? process.env;
    this.ownsDb = options.db === undefined;
    this.tracker = new JobTracker({
      db: options.db ?? dataApiDatabaseFromEnv(env),
      registry: options.registry,
      clock: options.clock,
      // A lone job it starts itself stays within the stack's cap on a type without a limit.
      defaultConcurrency: defaultTypeConcurrency(env),
    });
    const busName = options.busName ?? env.JOBS_BUS_NAME;
    // A nudge only saves waiting for the next minute: it must not hold the caller's enqueue for long.
    this.ownEventBridge =
      busName && !options.eventBridge
        ? new EventBridgeClient({ requestHandler: { requestTimeout: NUDGE_TIMEOUT_MS } })
        : undefined;
    const eventBridge = options.eventBridge ?? this.ownEventBridge;
    this.onNudgeError =
      options.onNudgeError ??
      ((error) =>
        console.warn('lana-jobs: could not wake fetch-ready; the job starts at its next minute', error));
    this.waker =
      busName && eventBridge
        ? FetchReadyWaker.forBus({
            busName,
            client: eventBridge,
            windowMs: options.nudgeWindowMs,
            nowMs: options.nowMs,
            onError: this.onNudgeError,
          })
        : undefined;
    this.publisher =
      busName && eventBridge && options.startDueJobs !== false
        ? createEventBridgePublisher({ busName, client: eventBridge })
        : undefined;
    this.windowMs = options.nudgeWindowMs ?? NUDGE_WINDOW_MS;
    this.nowMs = options.nowMs ?? Date.now;
  }

  async enqueue(job: NewJob<M>, options: InTransaction = {}): Promise<EnqueueResult> {
    const [result] = await this.enqueueMany([job], options);
    return result!;
  }

  /** Many jobs in one statement (all or nothing), then at most one nudge. */
  async enqueueMany(jobs: readonly NewJob<M>[], options: InTransaction = {}): Promise<EnqueueResult[]> {
    return this.afterEnqueue(await this.tracker.enqueueMany(jobs, options), options);
  }

  /** Untyped input (a queue message, a webhook): validated against the registry at run time. */
  async enqueueUntyped(
    jobs: readonly UntypedNewJob[],
    options: InTransaction = {},
  ): Promise<EnqueueResult[]> {
    return this.afterEnqueue(await this.tracker.enqueueUntyped(jobs, options), options);
  }

  /** Wakes fetch-ready now (after committing a transaction that enqueued due jobs). Never throws. */
  async wakeWorkers(): Promise<boolean> {
    return this.waker ? this.waker.wake() : false;
  }

  /** Closes the clients this client made (a database or EventBridge client passed in is the caller's). */
  async close(): Promise<void> {
    this.ownEventBridge?.destroy();
    if (this.ownsDb) await this.tracker.db.close();
  }

  private async afterEnqueue(results: EnqueueResult[], options: InTransaction): Promise<EnqueueResult[]> {
    if (options.db === undefined && this.waker) {
      const now = this.tracker.clock.now() ?? new Date();
      if (!(await this.startAlone(results, now))) await this.waker.afterEnqueue(results, now);
    }
    return results;
  }

  /**
   * The quiet path: a single due job, the first of its window, is claimed and published here (the AWS
   * twin of the local eager start), so it starts after a claim and an event instead of a nudge, a
   * fetch-ready run and its wait for the window's end. The claim is fetch-ready's own (the type's limit,
   * a dispatch lease, the attempt counted only when its executor begins it), so every guarantee holds: an
   * event that cannot be published is released (due again at once, uncounted) and fetch-ready is nudged;
   * a claim that finds no free slot leaves the job to the type's executors, which take their type's next
   * due job as they finish, and to the nudge. Returns whether the enqueued job was started here.
   */
  private async startAlone(results: EnqueueResult[], dbNow: Date): Promise<boolean> {
    if (!this.publisher || results.length !== 1 || !createdJobDueNow(results, dbNow)) return false;
    const now = this.nowMs();
    if (now - this.lastStartAt < this.windowMs) return false;
    this.lastStartAt = now;
    const enqueued = results[0]!.job;
    try {
      const [job] = await this.tracker.fetchReady(1, { jobType: enqueued.jobType });
      if (!job) return false;
      const event = toJobReadyEvent(job);
      // One send: a refused event goes back to the queue at once, and the nudge wakes fetch-ready for it.
      const { outcomes } = await publishWithRetry(this.publisher, [event], { maxPublishAttempts: 1 });
      if (!outcomes[0]?.ok) {
        await this.tracker.release([{ id: event.jobId, attempt: event.attempt }]);
        return false;
      }
      // An older due job of the type may have been claimed instead: this one still needs fetch-ready.
      return job.id === enqueued.id;
    } catch (error) {
      // The job is committed; fetch-ready takes it (a claim left unpublished is handed back uncounted).
      this.report(error);
      return false;
    }
  }

  private report(error: unknown): void {
    try {
      this.onNudgeError(error);
    } catch {
      // A reporter that throws must not turn a committed enqueue into a failed one.
    }
  }
}
