import type { Database } from '../db/port.js';
import {
  AttemptLifecycle,
  type AttemptRef,
  type CompletedAttempt,
  type FailOptions,
  type FailResult,
  type WorkerSlots,
} from './attempts.js';
import { BehindClaims } from './behind.js';
import { type Clock, databaseClock } from './clock.js';
import { driverLimits } from './driver-limits.js';
import {
  type EagerStarter,
  type EnqueueResult,
  JobEnqueuer,
  type NewJob,
  type ScheduleTickJob,
  type UntypedNewJob,
} from './enqueue.js';
import { type JobMetrics, noMetrics } from './metrics.js';
import type { ClaimedJob, Job } from './model.js';
import { OperatorQueries } from './operator.js';
import { JobTypePauses } from './pauses.js';
import {
  DISPATCH_LEASE_SECONDS,
  type InTransaction,
  type JobTypeMap,
  type JobTypeRegistry,
  type RateLimit,
} from './registry.js';
import * as sql from './sql.js';
import type { TrackerDeps } from './tracker-part.js';

export * from './attempts.js';
export type { BehindResult } from './behind.js';
export * from './enqueue.js';
export { assertUuid } from './ids.js';

import { assertUuid } from './ids.js';

export * from './operator.js';

export interface JobTrackerOptions<M extends JobTypeMap, S> {
  db: Database;
  registry: JobTypeRegistry<M, S>;
  clock?: Clock;
  metrics?: JobMetrics;
  /**
   * The concurrency limit of every job type that declares none. The AWS runtime sets the stack's cap, so
   * no backlog can take the account's whole Lambda concurrency; locally there is none by default.
   */
  defaultConcurrency?: number;
  /** Rate limits replacing the types' own (on AWS, the stack's setting, from `JOBS_RATE_LIMITS`). */
  rateLimitOverrides?: Readonly<Record<string, RateLimit>>;
}

/**
 * The job lifecycle in one face, over either database driver: enqueueing (`enqueue.ts`), the attempts
 * (claim, start, complete, fail, release, rescue: `attempts.ts`) and the operator's queries and actions
 * (`operator.ts`). Every method is one statement (a keyed enqueue that found its key taken adds a lookup,
 * split under the Data API's answer limit; a bulk enqueue over the Data API's request limit is split into
 * statements in one transaction); what a driver's limits mean is decided in `driver-limits.ts`.
 */
export class JobTracker<M extends JobTypeMap = JobTypeMap, S = unknown> {
  readonly db: Database;
  readonly registry: JobTypeRegistry<M, S>;
  readonly clock: Clock;
  readonly metrics: JobMetrics;
  private readonly enqueuer: JobEnqueuer<M, S>;
  private readonly attempts: AttemptLifecycle<M, S>;
  private readonly behindClaims: BehindClaims<M, S>;
  private readonly operator: OperatorQueries<M, S>;
  private readonly pauses: JobTypePauses<M, S>;

  constructor(options: JobTrackerOptions<M, S>) {
    this.db = options.db;
    this.registry = options.registry;
    this.clock = options.clock ?? databaseClock;
    this.metrics = options.metrics ?? noMetrics;
    const deps: TrackerDeps<M, S> = {
      db: this.db,
      registry: this.registry,
      clock: this.clock,
      metrics: this.metrics,
      limits: driverLimits(this.db),
      defaultConcurrency: options.defaultConcurrency,
      rateLimitOverrides: options.rateLimitOverrides,
    };
    this.enqueuer = new JobEnqueuer(deps);
    this.attempts = new AttemptLifecycle(deps);
    this.behindClaims = new BehindClaims(deps, this.attempts);
    this.operator = new OperatorQueries(deps);
    this.pauses = new JobTypePauses(deps);
    // Every session a pool opens pays its first job insert's planning ahead (see warmUpInsertSql),
    // including the sessions that replace those reaching their lifetime.
    this.db.warmSessionsWith?.(sql.warmUpInsertSql);
  }

  // Enqueueing.

  /**
   * Enqueues one job. With `db` set to an open transaction, the job commits or rolls back with the
   * caller's own changes (transactional enqueue).
   */
  async enqueue(job: NewJob<M>, options: InTransaction = {}): Promise<EnqueueResult> {
    const [result] = await this.enqueueMany([job], options);
    return result!;
  }

  /**
   * Enqueues many jobs in one statement (one transaction when a size-limited driver needs several), all or
   * nothing; results are in input order. Validates all before writing any.
   */
  enqueueMany(jobs: readonly NewJob<M>[], options: InTransaction = {}): Promise<EnqueueResult[]> {
    return this.enqueuer.enqueueUntyped(jobs as readonly UntypedNewJob[], options);
  }

  /** Enqueue from untyped input (the CLI, events): same validation, checked at run time only. */
  enqueueUntyped(jobs: readonly UntypedNewJob[], options: InTransaction = {}): Promise<EnqueueResult[]> {
    return this.enqueuer.enqueueUntyped(jobs, options);
  }

  /**
   * AWS's quiet path: one due job enqueued and its type's next due job claimed for an executor (within the
   * type's pause, rate and concurrency limits, under a dispatch lease) in ONE statement. Undefined for a
   * job scheduled ahead (enqueue it as usual). `claimed` may be an older due job of the type, or null.
   */
  async enqueueAndClaim(
    job: UntypedNewJob,
  ): Promise<{ result: EnqueueResult; claimed: ClaimedJob | null } | undefined> {
    const limits = await this.attempts.limitsWithSlots();
    return this.enqueuer.enqueueAndClaim(job, limits ?? '{}', DISPATCH_LEASE_SECONDS);
  }

  /**
   * Enqueues the jobs of schedule ticks no firer has recorded yet, recording them (schedules with a
   * backfill window); null for a tick already recorded. One transaction, all or nothing.
   */
  enqueueScheduleTicks(ticks: readonly ScheduleTickJob[]): Promise<(EnqueueResult | null)[]> {
    return this.enqueuer.enqueueScheduleTicks(ticks);
  }

  /** Has `connections` sessions pay ahead what a session's first job insert costs. Writes nothing. */
  warmUp(connections: number): Promise<void> {
    return this.enqueuer.warmUp(connections);
  }

  /** Lets `starter` take single due jobs enqueued through this tracker (eager start); returns the detach. */
  attachEagerStarter(starter: EagerStarter): () => void {
    return this.enqueuer.attachEagerStarter(starter);
  }

  // Attempts.

  fetchReady(limit: number, options: { startNow?: boolean; jobType?: string } = {}): Promise<ClaimedJob[]> {
    return this.attempts.fetchReady(limit, options);
  }

  claimForWorker(limit: number, slots?: WorkerSlots) {
    return this.attempts.claimForWorker(limit, slots);
  }

  settleWorkerSlots(worker: string, concurrency: number, keep: Record<string, number>) {
    return this.attempts.settleWorkerSlots(worker, concurrency, keep);
  }

  startAttempt(id: string, attempt: number, options: { paced?: boolean } = {}): Promise<Job | null> {
    return this.attempts.startAttempt(id, attempt, options);
  }

  /** Completes `attempt` of a job. Returns false when the attempt is no longer current (fenced out). */
  async markCompleted(id: string, attempt: number, options: { durationMs?: number } = {}): Promise<boolean> {
    assertUuid(id);
    const applied = await this.attempts.completeMany([{ id, attempt, durationMs: options.durationMs }]);
    return applied.length === 1;
  }

  completeMany(items: readonly CompletedAttempt[]): Promise<string[]> {
    return this.attempts.completeMany(items);
  }

  completeAndClaimNext(done: CompletedAttempt | null, jobType: string) {
    return this.attempts.completeAndClaimNext(done, jobType);
  }

  /**
   * Completes `done` and hands its slot on to the job claimed behind it (`behindOf`, begun here) or to the
   * type's next due job, claiming the one after behind it (`claimBehind`): one statement (`behind.ts`).
   */
  completeAndClaimBehind(
    done: CompletedAttempt,
    behindOf: AttemptRef | null,
    jobType: string,
    claimBehind: boolean,
  ) {
    return this.behindClaims.completeAndClaimBehind(done, behindOf, jobType, claimBehind);
  }

  /** Whether claims of `jobType` keep a rate (its own, or the stack's override). */
  isRateLimited(jobType: string): boolean {
    return this.attempts.isRateLimited(jobType);
  }

  /**
   * Fails `attempt` of a job under the retry rule. Returns what became of it, or `null` when the attempt
   * is no longer current (fenced out: nothing changed).
   */
  async markFailed(
    id: string,
    attempt: number,
    error: string,
    options: FailOptions = {},
  ): Promise<FailResult | null> {
    assertUuid(id);
    const [result] = await this.attempts.failMany([{ id, attempt, error, ...options }]);
    return result ?? null;
  }

  failMany(items: Parameters<AttemptLifecycle<M, S>['failMany']>[0]): Promise<FailResult[]> {
    return this.attempts.failMany(items);
  }

  release(...args: Parameters<AttemptLifecycle<M, S>['release']>) {
    return this.attempts.release(...args);
  }

  rescueExpiredLeases(limit?: number) {
    return this.attempts.rescueExpiredLeases(limit);
  }

  // The operator's queries and actions.

  getJob(id: string) {
    return this.operator.getJob(id);
  }

  requireJob(id: string) {
    return this.operator.requireJob(id);
  }

  getExecutions(id: string) {
    return this.operator.getExecutions(id);
  }

  listJobs(...args: Parameters<OperatorQueries<M, S>['listJobs']>) {
    return this.operator.listJobs(...args);
  }

  listJobsPage(...args: Parameters<OperatorQueries<M, S>['listJobsPage']>) {
    return this.operator.listJobsPage(...args);
  }

  countForBulk(...args: Parameters<OperatorQueries<M, S>['countForBulk']>) {
    return this.operator.countForBulk(...args);
  }

  retryMatching(...args: Parameters<OperatorQueries<M, S>['retryMatching']>) {
    return this.operator.retryMatching(...args);
  }

  cancelMatching(...args: Parameters<OperatorQueries<M, S>['cancelMatching']>) {
    return this.operator.cancelMatching(...args);
  }

  failureGroups(limit?: number) {
    return this.operator.failureGroups(limit);
  }

  getJobByKey(jobType: string, idempotencyKey: string) {
    return this.operator.getJobByKey(jobType, idempotencyKey);
  }

  cancel(id: string, reason?: string) {
    return this.operator.cancel(id, reason);
  }

  retry(id: string) {
    return this.operator.retry(id);
  }

  /** Replays a failed or cancelled job with a new payload; the old one stays in its history. */
  retryWithPayload(id: string, payload: unknown, by: string) {
    return this.operator.retryWithPayload(id, payload, by);
  }

  getPayloadChanges(id: string) {
    return this.operator.getPayloadChanges(id);
  }

  queueState() {
    return this.operator.queueState();
  }

  queueActivity() {
    return this.operator.queueActivity();
  }

  nextDueAt() {
    return this.operator.nextDueAt();
  }

  stats(windowSeconds?: number, finishedWindowSeconds?: number) {
    return this.operator.stats(windowSeconds, finishedWindowSeconds);
  }

  pruneFinished(...args: Parameters<OperatorQueries<M, S>['pruneFinished']>) {
    return this.operator.pruneFinished(...args);
  }

  countFinished(...args: Parameters<OperatorQueries<M, S>['countFinished']>) {
    return this.operator.countFinished(...args);
  }

  // Pausing job types.

  /** Stops every claim from taking `jobType`'s due jobs until it is resumed; running jobs finish. */
  pauseType(...args: Parameters<JobTypePauses<M, S>['pause']>) {
    return this.pauses.pause(...args);
  }

  /** Lets `jobType`'s due jobs be claimed again and wakes the local workers; null when it was not paused. */
  resumeType(jobType: string) {
    return this.pauses.resume(jobType);
  }

  pausedTypes() {
    return this.pauses.list();
  }
}
