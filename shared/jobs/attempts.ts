import { randomUUID } from 'node:crypto';
import { json, uuid } from '../db/port.js';
import { JobInputError } from './errors.js';
import { assertUuid } from './ids.js';
import type { AttemptOutcome } from './metrics.js';
import {
  type ClaimedJob,
  claimedJobsFromDocument,
  type Job,
  type JobRow,
  rowToClaimedJob,
  rowToJob,
} from './model.js';
import { DISPATCH_LEASE_SECONDS, type JobTypeMap, truncate } from './registry.js';
import { claimWithSlots } from './slotted-claims.js';
import * as sql from './sql.js';
import { TrackerPart } from './tracker-part.js';

/**
 * The attempt lifecycle: claim, start, complete, fail (with the retry rule), release and rescue. Every
 * attempt is fenced by its number, so a late report never overwrites a newer attempt.
 */

/**
 * How long a local worker's hold on a type's slots lasts after its last claim or heartbeat. A worker that
 * died gives its slots up this long after; a live one renews them well before (`Worker`).
 */
export const SLOT_LEASE_SECONDS = 60;

/**
 * How many times a job's claim may be handed back undelivered (no executor began it within its dispatch
 * lease) before the job fails, saying it was never delivered. Each costs no attempt; the bound keeps a
 * type whose events never arrive (a broken deploy, a missing permission) from cycling for ever.
 */
export const MAX_HANDBACKS = 10;

/**
 * On AWS a rate-limited type's starts are planned on its rate slots (`startAttemptSql`,
 * `completeAndClaimNextSql`), at least this long after the statement, so that its answer is back before
 * the start and every start happens on its plan: a Data API round trip, its tail included.
 */
export const RATE_START_LEAD_MS = 200;

/** How far ahead a rate-limited type's starts are planned at most (less for a window under a second). */
export const RATE_AHEAD_SECONDS = 1;

/**
 * When a job claimed for an executor is to start: its claim's time (its dispatch lease less the lease's
 * length), ahead of now for a rate-limited type's planned start, else already past.
 */
export function plannedStart(job: ClaimedJob): Date | null {
  return job.leaseExpiresAt ? new Date(job.leaseExpiresAt.getTime() - DISPATCH_LEASE_SECONDS * 1000) : null;
}

/** What a local worker tells its claim about the slots of limited types it holds and could use. */
export interface WorkerSlots {
  /** The worker's id: the holder of its slots. */
  worker: string;
  /** How many jobs the worker runs at once: it never holds more slots of one type. */
  concurrency: number;
  /** Per limited type: the worker's jobs of it running or queued (it keeps a slot for each). */
  inHand: Record<string, number>;
  /**
   * Limited types with no job in hand whose slot the worker keeps a moment after its last job of them (the
   * linger), so the next one starts at once: one slot each is kept, none taken for them.
   */
  lingering?: readonly string[];
  /**
   * `false`: the worker holds no slot beyond what it keeps, and none is due for renewal (it confirmed its
   * holds a moment ago), so the claim neither renews nor gives up slots (migration 0025): it only claims,
   * and takes slots if it needs more. Default `true`.
   */
  settle?: boolean;
  /** With `settle: false`: the slots the worker holds, per type (its claim may then read none). */
  held?: Record<string, number>;
  /**
   * With `settle: false`: whether to try the claim within holds first (`claimWithinHoldsSql`). Default
   * `true`; a worker whose last try did not apply skips it for a moment (`WorkerClaim.missedWithinHolds`).
   */
  withinHolds?: boolean;
}

export interface FailOptions {
  /** Fail at once, whatever attempts remain (unknown type, invalid payload, permanent errors). */
  permanent?: boolean;
  /**
   * Run again at this time instead of the backoff (the executor asked for it). Such a retry does not
   * count toward max attempts or the backoff.
   */
  retryAt?: Date;
  /** The run was cut short by a worker's shutdown: due again at once, not counted as an attempt. */
  interrupted?: boolean;
  durationMs?: number;
}

export interface AttemptRef {
  id: string;
  attempt: number;
}

export interface CompletedAttempt extends AttemptRef {
  durationMs?: number;
}

export interface FailedAttempt extends AttemptRef, FailOptions {
  error: string;
}

/** What became of a failed attempt. */
export interface FailResult {
  id: string;
  jobType: string;
  attempt: number;
  /** `retrying` (scheduled again at `scheduledAt`) or `failed` (no attempts left, or permanent). */
  status: 'retrying' | 'failed';
  scheduledAt: Date;
}

/** What the rescuer did with a running job whose lease expired. */
export type RescueResult =
  /** An attempt that began and vanished: failed under the retry rule (`lease_expired`). */
  | (FailResult & { undelivered: false; neverDelivered?: false })
  /**
   * No executor began the attempt: handed back uncounted, due at once (`pending` or `retrying`) or, after
   * `MAX_HANDBACKS` such claims, failed for good as never delivered (`neverDelivered`).
   */
  | {
      id: string;
      jobType: string;
      attempt: number;
      status: 'pending' | 'retrying' | 'failed';
      scheduledAt: Date;
      undelivered: true;
      neverDelivered: boolean;
    };

/** A local worker's claim: the jobs, and for a short claim when the next waiting job is due. */
export interface WorkerClaim {
  jobs: ClaimedJob[];
  /** Due time of the earliest job left waiting (`null`: none); `undefined` when the claim was full. */
  nextDueAt: Date | null | undefined;
  /**
   * Due jobs were left behind although the claim came back short: a limited type whose slots others hold
   * (they wake this worker when they give one up), or rows another claimer held.
   */
  leftBehind: boolean;
  /** With `WorkerSlots`: the slots the worker holds after the claim, per limited type. */
  held: Record<string, number>;
  /**
   * The claim within holds was tried and did not apply for a reason that lasts while those jobs are due (a
   * type paused, or a limited type due with a rate or key limit, or at several priorities), so the full
   * claim was made after it. (A limited type due that the worker holds no slot of also sends it to the full
   * claim, which takes the slots: that is no reason to stop trying.)
   */
  missedWithinHolds?: boolean;
}

export class AttemptLifecycle<M extends JobTypeMap, S> extends TrackerPart<M, S> {
  /** The slot rows of the limited types, made once per process before its first limited claim. */
  private slotsMade: Promise<void> | null = null;

  /** The claims' limits (concurrency and rates), with their slot rows made (once per process). */
  async limitsWithSlots(): Promise<string | null> {
    const claimLimits = this.claimLimits();
    if (claimLimits === null) return null;
    if (!this.slotsMade) {
      const limits = this.concurrencyLimits();
      const rates = this.rateLimits();
      this.slotsMade = Promise.all([
        limits === null ? null : this.db.query(sql.ensureSlotsSql, { limits }),
        rates === null ? null : this.db.query(sql.ensureRateSlotsSql, { rates }),
      ]).then(
        () => undefined,
        (err: unknown) => {
          this.slotsMade = null;
          throw err;
        },
      );
    }
    await this.slotsMade;
    return claimLimits;
  }

  /**
   * Claims up to `limit` due jobs in ONE statement (`FOR UPDATE SKIP LOCKED`): priority first, then due
   * time. Concurrent claimers never get the same job. Each claimed job is `running` with a lease, its
   * attempt counted. `startNow` also marks the attempt begun (in-process workers run it straight away).
   */
  async fetchReady(
    limit: number,
    options: { startNow?: boolean; jobType?: string } = {},
  ): Promise<ClaimedJob[]> {
    assertClaimLimit(limit);
    const limits = await this.limitsWithSlots();
    const params = this.params({
      limit,
      start_now: options.startNow ?? false,
      dispatch_lease_seconds: DISPATCH_LEASE_SECONDS,
      claim_token: this.limits.callToken(),
    });
    if (limits !== null || options.jobType !== undefined) {
      Object.assign(params, { limits: limits ?? '{}', only_type: options.jobType ?? null });
      if (this.limits.claimsAsDocument) {
        const doc = await this.db.query<{ jobs: string }>(sql.claimLimitedAsDocumentSql, params);
        return claimedJobsFromDocument(doc.rows[0]?.jobs ?? '[]');
      }
      const res = await this.db.query<JobRow>(sql.claimLimitedSql, params);
      return res.rows.map(rowToClaimedJob);
    }
    if (this.limits.claimsAsDocument) {
      const doc = await this.db.query<{ jobs: string }>(sql.claimDueJobsAsDocumentSql, params);
      return claimedJobsFromDocument(doc.rows[0]?.jobs ?? '[]');
    }
    const res = await this.db.query<JobRow>(sql.claimDueJobsSql, params);
    return res.rows.map(rowToClaimedJob);
  }

  /**
   * The local worker's claim (attempts begun at once): the claimed jobs and, when the claim came back
   * short, when the earliest job left waiting is due (`null`: none), in the same statement. `undefined` when
   * the claim was full (more may be due now). With limited types and `slots`, the worker holds slots of
   * those types and claims their jobs ahead as for any type (`claimLimitedForWorkerSql`); without `slots`
   * (or over a driver with a row limit) each job of a limited type holds a slot of its own.
   */
  async claimForWorker(limit: number, slots?: WorkerSlots): Promise<WorkerClaim> {
    assertClaimLimit(limit);
    const limits = await this.limitsWithSlots();
    if (!this.limits.claimsAsDocument || (limits !== null && !slots)) {
      // Rows under a row limit; the next due time, only if needed, in a second statement.
      const jobs = await this.fetchReady(limit, { startNow: true });
      if (jobs.length >= limit) return { jobs, nextDueAt: undefined, leftBehind: false, held: {} };
      return {
        jobs,
        nextDueAt: await this.nextDueAtAfterShortClaim(),
        leftBehind: limits !== null,
        held: {},
      };
    }
    if (limits !== null && slots) {
      return claimWithSlots(this.db, (extra) => this.params(extra), limit, limits, slots);
    }
    const res = await this.db.query<{ jobs: string; next_due_at: Date | null }>(
      sql.claimDueJobsForWorkerSql,
      this.params({
        limit,
        start_now: true,
        dispatch_lease_seconds: DISPATCH_LEASE_SECONDS,
        claim_token: this.limits.callToken(),
      }),
    );
    const jobs = claimedJobsFromDocument(res.rows[0]?.jobs ?? '[]');
    return {
      jobs,
      nextDueAt: jobs.length < limit ? (res.rows[0]?.next_due_at ?? null) : undefined,
      leftBehind: false,
      held: {},
    };
  }

  /**
   * Settles a local worker's slots outside a claim: keeps, per limited type, as many as `keep` says (its
   * jobs in hand), renewed, and gives up the rest, waking the other workers. Returns what it holds after.
   */
  async settleWorkerSlots(
    worker: string,
    concurrency: number,
    keep: Record<string, number>,
  ): Promise<Record<string, number>> {
    const res = await this.db.query<{ held: string }>(
      sql.settleWorkerSlotsSql,
      this.params({
        worker: uuid(worker),
        limits: this.concurrencyLimits() ?? '{}',
        concurrency,
        keep: JSON.stringify(keep),
        slot_lease_seconds: SLOT_LEASE_SECONDS,
      }),
    );
    return JSON.parse(res.rows[0]?.held ?? '{}') as Record<string, number>;
  }

  /** When the earliest job left waiting after a short claim is due (`null`: none). */
  private async nextDueAtAfterShortClaim(): Promise<Date | null> {
    const res = await this.db.query<{ next_due_at: Date | null }>(sql.nextDueAtSql, this.params({}));
    return res.rows[0]?.next_due_at ?? null;
  }

  /**
   * Records that an executor began `attempt`. Returns the job for the first delivery of the current
   * attempt, `null` for a duplicate delivery or a stale attempt (do not run it). `paced` (an event's
   * delivery): a rate-limited type's start is planned on a rate slot, `startedAt` (run it then), or, with
   * none within reach, refused (`null`; hand the claim back with `release`).
   */
  async startAttempt(id: string, attempt: number, options: { paced?: boolean } = {}): Promise<Job | null> {
    assertUuid(id);
    const res = await this.db.query<JobRow>(
      sql.startAttemptSql,
      this.params({
        id: uuid(id),
        attempt,
        token: uuid(randomUUID()),
        rates: options.paced ? this.rateLimits() : null,
        start_lead_ms: RATE_START_LEAD_MS,
        rate_ahead_seconds: RATE_AHEAD_SECONDS,
      }),
    );
    return res.rows[0] ? rowToJob(res.rows[0]) : null;
  }

  /** Completes many attempts in one statement; returns the ids that applied. */
  async completeMany(items: readonly CompletedAttempt[]): Promise<string[]> {
    if (items.length === 0) return [];
    // The answer lists every applied attempt in one row: keep that row under a driver's row limit.
    const chunk = this.limits.completionsPerStatement;
    const applied: string[] = [];
    for (let from = 0; from < items.length; from += chunk) {
      const part = chunk >= items.length ? items : items.slice(from, from + chunk);
      const res = await this.db.query<{ applied: string }>(
        sql.completeAttemptsSql,
        this.params({
          items: json(
            part.map((i) => ({ id: i.id, attempt: i.attempt, duration_ms: roundMs(i.durationMs) })),
          ),
          token: this.limits.callToken(),
        }),
      );
      const rows = JSON.parse(res.rows[0]?.applied ?? '[]') as [string, string, number | null][];
      for (const [id, jobType, durationMs] of rows) {
        this.metrics.attemptFinished(jobType, 'completed', durationMs);
        applied.push(id);
      }
    }
    return applied;
  }

  /** Whether claims of `jobType` keep a rate (its own, or the stack's override). */
  isRateLimited(jobType: string): boolean {
    const rates = this.rateLimits();
    return rates !== null && jobType in (JSON.parse(rates) as Record<string, unknown>);
  }

  /**
   * Completes `attempt` (none: `null`) and claims the next due job of `jobType` (within the type's
   * concurrency limit, under a dispatch lease), in one statement. A rate-limited type's next job is
   * claimed ahead: its start is planned at its claim's time (`plannedStart`), which may be up to a second
   * ahead.
   * `completed` is false when the attempt was fenced out; `next` is null when no job of the type is due
   * or the type is at its limit.
   */
  async completeAndClaimNext(
    done: CompletedAttempt | null,
    jobType: string,
  ): Promise<{ completed: boolean; next: ClaimedJob | null }> {
    if (done) assertUuid(done.id);
    const limits = await this.limitsWithSlots();
    const res = await this.db.query<JobRow & { applied: boolean }>(
      sql.completeAndClaimNextSql,
      this.params({
        id: done ? uuid(done.id) : null,
        attempt: done?.attempt ?? null,
        duration_ms: roundMs(done?.durationMs),
        token: uuid(randomUUID()),
        limits: limits ?? '{}',
        only_type: jobType,
        dispatch_lease_seconds: DISPATCH_LEASE_SECONDS,
        start_lead_ms: RATE_START_LEAD_MS,
        rate_ahead_seconds: RATE_AHEAD_SECONDS,
      }),
    );
    const row = res.rows[0];
    const completed = row?.applied === true;
    if (completed) this.metrics.attemptFinished(jobType, 'completed', roundMs(done?.durationMs));
    return { completed, next: row?.id ? rowToClaimedJob(row) : null };
  }

  /** Fails many attempts in one statement; returns those that applied. */
  async failMany(items: readonly FailedAttempt[]): Promise<FailResult[]> {
    if (items.length === 0) return [];
    const res = await this.db.query<FailRow>(
      sql.failAttemptsFromInputSql,
      this.params({
        items: json(
          items.map((i) => ({
            id: i.id,
            attempt: i.attempt,
            error: truncate(i.error, 4000),
            retry_at:
              (i.retryAt ?? (i.interrupted ? (this.clock.now() ?? new Date()) : undefined))?.toISOString() ??
              null,
            permanent: i.permanent ?? false,
            duration_ms: roundMs(i.durationMs),
            outcome: i.permanent
              ? 'failed'
              : i.interrupted
                ? 'interrupted'
                : i.retryAt
                  ? 'retry_requested'
                  : 'failed',
          })),
        ),
        token: this.limits.callToken(),
      }),
    );
    return res.rows.map((r) => this.reportFailure(r, r.status as 'retrying' | 'failed'));
  }

  private reportFailure(r: FailRow, outcome: AttemptOutcome): FailResult {
    this.metrics.attemptFinished(r.job_type, outcome, r.duration_ms);
    return {
      id: r.id,
      jobType: r.job_type,
      attempt: r.attempts,
      status: r.status === 'failed' ? 'failed' : 'retrying',
      scheduledAt: r.scheduled_at,
    };
  }

  /**
   * Hands back claims whose attempts never began, so the jobs are claimable again at once; the attempt is
   * recorded as `released` and does not count toward max attempts or the backoff.
   * `requireUnstarted` (default true) leaves alone an attempt an executor has already begun.
   */
  async release(
    items: readonly AttemptRef[],
    options: { requireUnstarted?: boolean } = {},
  ): Promise<string[]> {
    if (items.length === 0) return [];
    const res = await this.db.query<{ id: string }>(
      sql.releaseClaimsSql,
      this.params({
        items: json(items.map((i) => ({ id: i.id, attempt: i.attempt }))),
        require_unstarted: options.requireUnstarted ?? true,
      }),
    );
    return res.rows.map((r) => r.id);
  }

  /**
   * Running jobs whose lease expired: an attempt that began counts as failed and follows the retry rule; a
   * claim that no executor began is handed back uncounted (`undelivered`). Returns what became of each
   * (bounded by `limit` per call).
   */
  async rescueExpiredLeases(limit = 1000): Promise<RescueResult[]> {
    const res = await this.db.query<FailRow>(
      sql.rescueExpiredLeasesSql,
      this.params({ limit, token: null, max_handbacks: MAX_HANDBACKS }),
    );
    const results = res.rows.map(
      (r): RescueResult =>
        r.outcome === 'undelivered'
          ? {
              id: r.id,
              jobType: r.job_type,
              attempt: r.attempts,
              status: r.status,
              scheduledAt: r.scheduled_at,
              undelivered: true,
              neverDelivered: r.status === 'failed',
            }
          : { ...this.reportFailure(r, 'lease_expired'), undelivered: false },
    );
    const handedBack = new Map<string, number>();
    for (const r of results)
      if (r.undelivered) handedBack.set(r.jobType, (handedBack.get(r.jobType) ?? 0) + 1);
    for (const [jobType, count] of handedBack) this.metrics.claimsHandedBack?.(jobType, count);
    return results;
  }
}

interface FailRow {
  [column: string]: unknown;
  id: string;
  job_type: string;
  attempts: number;
  status: 'retrying' | 'failed' | 'pending';
  scheduled_at: Date;
  duration_ms: number | null;
  outcome?: string;
}

function roundMs(ms: number | undefined): number | null {
  return ms === undefined ? null : Math.max(0, Math.round(ms));
}

function assertClaimLimit(limit: number): void {
  if (!Number.isInteger(limit) || limit < 1)
    throw new JobInputError('invalid_option', 'limit must be a positive integer');
}
