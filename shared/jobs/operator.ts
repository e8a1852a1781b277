import { json, uuid } from '../db/port.js';
import { MAX_PAYLOAD_BYTES } from './enqueue.js';
import { JobInputError } from './errors.js';
import { assertUuid } from './ids.js';
import { parseConcurrencyKey } from './job-input.js';
import {
  type ExecutionRow,
  JOB_STATUSES,
  type Job,
  type JobExecution,
  type JobRow,
  type JobStatus,
  rowToExecution,
  rowToJob,
} from './model.js';
import { isFailureOutcome } from './outcomes.js';
import { type JobTypePause, type PauseRow, toPause } from './pauses.js';
import type { JobTypeMap } from './registry.js';
import * as sql from './sql.js';
import { TrackerPart } from './tracker-part.js';

/** The operator's queries and actions: list, show, cancel, retry, the queue's state, stats, retention. */

export interface JobFilter {
  status?: JobStatus;
  jobType?: string;
  limit?: number;
}

export interface QueueState {
  depth: number;
  oldestReadyAgeSeconds: number;
}

/** What the queue did in the last minute, read from the tables (fetch-ready's scheduled run reports it). */
export interface QueueActivity {
  /** Jobs created in the last minute, by any path. */
  enqueuedLastMinute: number;
  /** Attempts running past their type's timeout (their lease not yet expired). */
  runningPastTimeout: number;
}

export interface JobStats {
  counts: { jobType: string; status: JobStatus; count: number }[];
  queue: QueueState;
  overdueRunning: number;
  /** Finished jobs (completed, failed, cancelled) are counted over this many seconds back. */
  finishedWindowSeconds: number;
  lastHour: {
    jobType: string;
    completed: number;
    failed: number;
    avgDurationMs: number;
    maxDurationMs: number;
    failureRate: number;
  }[] /** The paused job types (none of their due jobs is claimed), with who paused each, when and why. */;
  paused: JobTypePause[];
}

/** A replay's change of a job's payload: what it was, what it became, who changed it and when. */
export interface PayloadChange {
  changedAt: Date;
  changedBy: string;
  previousPayload: unknown;
  payload: unknown;
}

/** The console's (and any operator's) filter over jobs; every field optional. */
export interface JobQuery {
  status?: JobStatus;
  jobType?: string;
  idempotencyKey?: string;
  /** Created at or after. */
  createdFrom?: Date;
  /** Created before. */
  createdTo?: Date;
}

export interface JobPage {
  jobs: Job[];
  /** The cursor of the next (older) page, or null on the last page. */
  nextBefore: string | null;
}

export interface FailureGroup {
  error: string | null;
  count: number;
  failed: number;
  retrying: number;
  newest: Job | null;
}

/** How many jobs a bulk action changes at most in one call. */
export const BULK_ACTION_LIMIT = 10_000;

/** Who changed a payload by a replay: kept in `job_payload_changes`, bounded as its check is. */
export const MAX_CHANGED_BY_LENGTH = 200;

export class OperatorQueries<M extends JobTypeMap, S> extends TrackerPart<M, S> {
  async getJob(id: string): Promise<Job | null> {
    assertUuid(id);
    const res = await this.db.query<JobRow>(sql.jobByIdSql, { id: uuid(id) });
    return res.rows[0] ? rowToJob(res.rows[0]) : null;
  }

  /** The job, or a `JobInputError('job_not_found')`. */
  async requireJob(id: string): Promise<Job> {
    const job = await this.getJob(id);
    if (!job) throw new JobInputError('job_not_found', `no job with id ${id}`);
    return job;
  }

  async getExecutions(id: string): Promise<JobExecution[]> {
    assertUuid(id);
    const res = await this.db.query<ExecutionRow>(sql.executionsByJobSql, { id: uuid(id) });
    return res.rows.map(rowToExecution);
  }

  async listJobs(filter: JobFilter = {}): Promise<Job[]> {
    if (filter.status !== undefined && !JOB_STATUSES.includes(filter.status)) {
      throw new JobInputError(
        'invalid_option',
        `unknown status "${filter.status}" (one of ${JOB_STATUSES.join(', ')})`,
      );
    }
    if (filter.jobType !== undefined) this.registry.require(filter.jobType);
    const limit = filter.limit ?? 50;
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) {
      throw new JobInputError('invalid_option', 'limit must be an integer from 1 to 10000');
    }
    const res = await this.db.query<JobRow>(sql.listJobsSql, {
      status: filter.status ?? null,
      job_type: filter.jobType ?? null,
      limit,
    });
    return res.rows.map(rowToJob);
  }

  /** Validates a filter (a clear `JobInputError` for a bad one) and returns its statement shape and params. */
  private filterParts(q: JobQuery): { shape: sql.JobFilterShape; params: Record<string, unknown> } {
    if (q.status !== undefined && !JOB_STATUSES.includes(q.status)) {
      throw new JobInputError(
        'invalid_option',
        `unknown status "${q.status}" (one of ${JOB_STATUSES.join(', ')})`,
      );
    }
    if (q.jobType !== undefined) this.registry.require(q.jobType);
    for (const [name, d] of [
      ['created from', q.createdFrom],
      ['created to', q.createdTo],
    ] as const) {
      if (d !== undefined && (!(d instanceof Date) || Number.isNaN(d.getTime()))) {
        throw new JobInputError('invalid_option', `${name} is not a valid time`);
      }
    }
    const shape: sql.JobFilterShape = {
      status: q.status ?? null,
      jobType: q.jobType !== undefined,
      key: q.idempotencyKey !== undefined,
      from: q.createdFrom !== undefined,
      to: q.createdTo !== undefined,
    };
    const params: Record<string, unknown> = {};
    if (shape.jobType) params.job_type = q.jobType;
    if (shape.key) params.idempotency_key = q.idempotencyKey;
    if (shape.from) params.created_from = q.createdFrom;
    if (shape.to) params.created_to = q.createdTo;
    return { shape, params };
  }

  /** A page of jobs matching `query`, newest first, older than the cursor `before` (keyset paging). */
  async listJobsPage(query: JobQuery, page: { before?: string; limit?: number } = {}): Promise<JobPage> {
    const { shape, params } = this.filterParts(query);
    if (page.before !== undefined) assertUuid(page.before);
    const limit = page.limit ?? 50;
    if (!Number.isInteger(limit) || limit < 1 || limit > 500) {
      throw new JobInputError('invalid_option', 'limit must be an integer from 1 to 500');
    }
    const res = await this.db.query<JobRow>(sql.jobsPageSql(shape, page.before !== undefined), {
      ...params,
      ...(page.before !== undefined ? { before: uuid(page.before) } : {}),
      limit: limit + 1,
    });
    const jobs = res.rows.slice(0, limit).map(rowToJob);
    return { jobs, nextBefore: res.rows.length > limit ? jobs[jobs.length - 1]!.id : null };
  }

  /** How many jobs of `query` a bulk retry or cancel would change (counted up to BULK_ACTION_LIMIT). */
  async countForBulk(query: JobQuery, action: 'retry' | 'cancel'): Promise<number> {
    const { shape, params } = this.filterParts(query);
    const res = await this.db.query<{ count: number }>(
      sql.countForBulkSql(shape, action === 'retry' ? 'retryable' : 'cancellable'),
      { ...params, cap: BULK_ACTION_LIMIT },
    );
    return res.rows[0]?.count ?? 0;
  }

  /** Retries the failed and cancelled jobs of `query` (up to BULK_ACTION_LIMIT); returns their ids. */
  async retryMatching(query: JobQuery): Promise<string[]> {
    const { shape, params } = this.filterParts(query);
    const budgets = Object.fromEntries(this.registry.list().map((t) => [t.type, t.retry.maxAttempts]));
    const res = await this.db.query<{ id: string }>(
      sql.bulkRetrySql(shape),
      this.params({ ...params, budgets: json(budgets), limit: BULK_ACTION_LIMIT }),
    );
    return res.rows.map((r) => r.id);
  }

  /** Cancels the pending, retrying and running jobs of `query` (up to BULK_ACTION_LIMIT); returns their ids. */
  async cancelMatching(query: JobQuery): Promise<string[]> {
    const { shape, params } = this.filterParts(query);
    const res = await this.db.query<{ id: string }>(
      sql.bulkCancelSql(shape),
      this.params({ ...params, limit: BULK_ACTION_LIMIT }),
    );
    return res.rows.map((r) => r.id);
  }

  /** Failed and retrying jobs grouped by error message, largest group first, with the newest example. */
  async failureGroups(limit = 50): Promise<FailureGroup[]> {
    const res = await this.db.query<{
      error: string | null;
      count: number;
      failed: number;
      retrying: number;
      newest_id: string;
    }>(sql.failureGroupsSql, { limit });
    const newest = await Promise.all(res.rows.map((r) => this.getJob(r.newest_id)));
    return res.rows.map((r, i) => ({
      error: r.error,
      count: r.count,
      failed: r.failed,
      retrying: r.retrying,
      newest: newest[i] ?? null,
    }));
  }

  /** The job of a type with an idempotency key (a schedule tick's job), or null. */
  async getJobByKey(jobType: string, idempotencyKey: string): Promise<Job | null> {
    const res = await this.db.query<JobRow>(sql.jobByKeySql, {
      job_type: jobType,
      idempotency_key: idempotencyKey,
    });
    return res.rows[0] ? rowToJob(res.rows[0]) : null;
  }

  /** Cancels a pending, retrying or running job. Throws for an unknown id or a finished job. */
  async cancel(id: string, reason?: string): Promise<Job> {
    assertUuid(id);
    const res = await this.db.query<JobRow>(
      sql.cancelJobSql,
      this.params({ id: uuid(id), reason: reason ?? null }),
    );
    if (res.rows[0]) return rowToJob(res.rows[0]);
    const job = await this.requireJob(id);
    throw new JobInputError(
      'invalid_state',
      `job ${id} is ${job.status}; only pending, retrying or running jobs can be cancelled`,
    );
  }

  /** Puts a failed or cancelled job back in the queue, due now, with a fresh attempt budget. */
  async retry(id: string): Promise<Job> {
    assertUuid(id);
    const current = await this.requireJob(id);
    const budget = this.registry.get(current.jobType)?.retry.maxAttempts ?? current.maxAttempts;
    const res = await this.db.query<JobRow>(sql.retryJobSql, this.params({ id: uuid(id), budget }));
    if (res.rows[0]) return rowToJob(res.rows[0]);
    const job = await this.requireJob(id);
    throw new JobInputError(
      'invalid_state',
      `job ${id} is ${job.status}; only failed or cancelled jobs can be retried`,
    );
  }

  /**
   * Replays a failed or cancelled job with a new payload, validated by its type's schema (and size) as an
   * enqueue is: the job is pending again, due now, with a fresh attempt budget, and the payload it had is
   * kept in its history with `by` and the time. Bad input changes nothing.
   */
  async retryWithPayload(id: string, payload: unknown, by: string): Promise<Job> {
    assertUuid(id);
    const current = await this.requireJob(id);
    const who = by.trim();
    if (who === '' || who.length > MAX_CHANGED_BY_LENGTH)
      throw new JobInputError(
        'invalid_option',
        `who changes the payload must be 1 to ${MAX_CHANGED_BY_LENGTH} characters`,
      );
    const parsed = this.registry.parsePayload(current.jobType, payload);
    const payloadJson = JSON.stringify(parsed);
    const bytes = Buffer.byteLength(payloadJson, 'utf8');
    if (bytes > MAX_PAYLOAD_BYTES)
      throw new JobInputError(
        'payload_too_large',
        `payload of ${current.jobType} is ${bytes} bytes; the limit is ${MAX_PAYLOAD_BYTES} bytes of JSON`,
      );
    const jobType = this.registry.get(current.jobType);
    const budget = jobType?.retry.maxAttempts ?? current.maxAttempts;
    // The new payload may name another key: the job waits under that one.
    const concurrencyKey = jobType?.concurrencyKey
      ? parseConcurrencyKey(jobType.type, jobType.concurrencyKey.field, parsed)
      : null;
    const res = await this.db.query<JobRow>(
      sql.retryJobWithPayloadSql,
      this.params({
        id: uuid(id),
        budget,
        payload: payloadJson,
        changed_by: who,
        concurrency_key: concurrencyKey,
      }),
    );
    if (res.rows[0]) return rowToJob(res.rows[0]);
    const job = await this.requireJob(id);
    throw new JobInputError(
      'invalid_state',
      `job ${id} is ${job.status}; only failed or cancelled jobs can be retried`,
    );
  }

  /** A job's payload changes by replays, oldest first. */
  async getPayloadChanges(id: string): Promise<PayloadChange[]> {
    assertUuid(id);
    const res = await this.db.query<{
      changed_at: Date;
      changed_by: string;
      previous_payload: string;
      payload: string;
    }>(sql.payloadChangesByJobSql, { id: uuid(id) });
    return res.rows.map((r) => ({
      changedAt: new Date(r.changed_at),
      changedBy: r.changed_by,
      previousPayload: JSON.parse(r.previous_payload) as unknown,
      payload: JSON.parse(r.payload) as unknown,
    }));
  }

  /** Due ready jobs and the age of the oldest; also reported to the metrics port. */
  async queueState(): Promise<QueueState> {
    const res = await this.db.query<{ depth: number; oldest_ready_age_seconds: number }>(
      sql.queueStateSql,
      this.params({}),
    );
    const row = res.rows[0]!;
    const state = { depth: row.depth, oldestReadyAgeSeconds: Math.max(0, row.oldest_ready_age_seconds) };
    this.metrics.queueState(state);
    return state;
  }

  /** Jobs enqueued in the last minute and attempts running long; also reported to the metrics port. */
  async queueActivity(): Promise<QueueActivity> {
    const res = await this.db.query<{ enqueued_last_minute: number; running_past_timeout: number }>(
      sql.queueActivitySql,
      this.params({}),
    );
    const row = res.rows[0]!;
    const activity = {
      enqueuedLastMinute: row.enqueued_last_minute,
      runningPastTimeout: row.running_past_timeout,
    };
    this.metrics.queueActivity?.(activity);
    return activity;
  }

  /** When the next ready job becomes due (null when the queue holds none). */
  async nextDueAt(): Promise<Date | null> {
    const res = await this.db.query<{ next_due_at: Date | null }>(sql.nextDueAtSql, this.params({}));
    return res.rows[0]?.next_due_at ?? null;
  }

  /**
   * Counts by status and type (unfinished jobs all, finished ones over the last `finishedWindowSeconds`,
   * a day by default, so the history is never read whole), queue depth, overdue running jobs, and the last
   * `windowSeconds`' outcomes.
   */
  async stats(windowSeconds = 3600, finishedWindowSeconds = 86_400): Promise<JobStats> {
    const [counts, queue, overdue, recent, paused] = await Promise.all([
      this.db.query<{ job_type: string; status: JobStatus; count: number }>(
        sql.countsByStatusAndTypeBoundedSql,
        this.params({ finished_window_seconds: finishedWindowSeconds }),
      ),
      this.queueState(),
      this.db.query<{ overdue: number }>(sql.overdueRunningSql, this.params({})),
      this.db.query<{
        job_type: string;
        outcome: string;
        count: number;
        avg_duration_ms: number;
        max_duration_ms: number;
      }>(sql.recentOutcomesSql, this.params({ window_seconds: windowSeconds })),
      this.db.query<PauseRow>(sql.pausedJobTypesSql),
    ]);
    const byType = new Map<string, JobStats['lastHour'][number] & { weighted: number }>();
    for (const r of recent.rows) {
      const t = byType.get(r.job_type) ?? {
        jobType: r.job_type,
        completed: 0,
        failed: 0,
        avgDurationMs: 0,
        maxDurationMs: 0,
        failureRate: 0,
        weighted: 0,
      };
      if (r.outcome === 'completed') t.completed += r.count;
      else if (isFailureOutcome(r.outcome)) t.failed += r.count;
      t.weighted += r.avg_duration_ms * r.count;
      t.maxDurationMs = Math.max(t.maxDurationMs, r.max_duration_ms);
      byType.set(r.job_type, t);
    }
    const lastHour = [...byType.values()].map(({ weighted, ...t }) => {
      const finished = t.completed + t.failed;
      return {
        ...t,
        avgDurationMs: finished > 0 ? Math.round(weighted / finished) : 0,
        failureRate: finished > 0 ? t.failed / finished : 0,
      };
    });
    return {
      counts: counts.rows.map((r) => ({ jobType: r.job_type, status: r.status, count: r.count })),
      queue,
      overdueRunning: overdue.rows[0]?.overdue ?? 0,
      finishedWindowSeconds,
      lastHour,
      paused: paused.rows.map(toPause),
    };
  }

  /**
   * Deletes finished jobs (and their execution rows) completed before `before`, in bounded batches so no
   * statement holds locks for long. Returns how many jobs were deleted.
   */
  async pruneFinished(options: PruneOptions & { batchSize?: number; maxBatches?: number }): Promise<number> {
    this.validatePrune(options);
    const batch = options.batchSize ?? 5000;
    let total = 0;
    for (let i = 0; i < (options.maxBatches ?? Number.POSITIVE_INFINITY); i++) {
      const res = await this.db.query(sql.pruneFinishedJobsSql, {
        statuses: json(options.statuses),
        before: options.before,
        job_type: options.jobType ?? null,
        batch,
      });
      total += res.rowCount;
      if (res.rowCount < batch) break;
    }
    return total;
  }

  /** What `pruneFinished` with the same options would delete now, by type and status (a dry run). */
  async countFinished(
    options: PruneOptions,
  ): Promise<{ jobType: string; status: JobStatus; count: number }[]> {
    this.validatePrune(options);
    const res = await this.db.query<{ job_type: string; status: JobStatus; count: number }>(
      sql.countFinishedJobsSql,
      {
        statuses: json(options.statuses),
        before: options.before,
        job_type: options.jobType ?? null,
      },
    );
    return res.rows.map((r) => ({ jobType: r.job_type, status: r.status, count: Number(r.count) }));
  }

  private validatePrune(options: PruneOptions): void {
    if (!(options.before instanceof Date) || Number.isNaN(options.before.getTime())) {
      throw new JobInputError('invalid_option', 'prune needs a valid cutoff time');
    }
    for (const s of options.statuses) {
      if (!['completed', 'cancelled', 'failed'].includes(s)) {
        throw new JobInputError('invalid_option', `only finished jobs can be pruned (got status "${s}")`);
      }
    }
    if (options.jobType !== undefined) this.registry.require(options.jobType);
  }
}

export interface PruneOptions {
  before: Date;
  statuses: readonly ('completed' | 'cancelled' | 'failed')[];
  jobType?: string;
}
