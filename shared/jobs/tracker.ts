import { randomUUID } from 'node:crypto';
import type { z } from 'zod';
import {
  type Database,
  DatabaseError,
  json,
  type Queryable,
  type QueryResult,
  type SqlParams,
  type SqlValue,
  type TypedValue,
  uuid,
} from '../db/port.js';
import { type Clock, databaseClock } from './clock.js';
import { JobInputError } from './errors.js';
import { newJobId } from './ids.js';
import type { AttemptOutcome, JobMetrics } from './metrics.js';
import { noMetrics } from './metrics.js';
import {
  type ClaimedJob,
  claimedJobsFromDocument,
  type ExecutionRow,
  JOB_STATUSES,
  type Job,
  type JobExecution,
  type JobRow,
  type JobStatus,
  rowToClaimedJob,
  rowToExecution,
  rowToJob,
} from './model.js';
import type { InTransaction, JobTypeMap, JobTypeRegistry } from './registry.js';
import { DISPATCH_LEASE_SECONDS, truncate } from './registry.js';
import * as sql from './sql.js';

/**
 * Payloads are limited to 16 KiB of JSON. A claim through the Data API returns its rows in one response
 * of at most 1 MiB, and a claim whose response is lost leaves its jobs running until their leases expire:
 * 30 rows of 16 KiB, even if every character needed escaping in the response, stay under it. It also keeps
 * a row under the Data API's 64 KB-per-row limit and an EventBridge entry far under its size limit.
 */
export const MAX_PAYLOAD_BYTES = 16 * 1024;
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;
export const PRIORITY_RANGE = { min: -1000, max: 1000 } as const;
/** Scheduling further ahead than this is almost certainly a unit mistake. */
export const MAX_SCHEDULE_AHEAD_MS = 5 * 366 * 24 * 3600 * 1000;
/** Bulk enqueue limit per call (one statement). */
export const MAX_JOBS_PER_ENQUEUE = 10_000;
/** How soon a worker held back by a type's concurrency limit claims again. */
export const LIMITED_TYPE_POLL_MS = 250;
/**
 * Existing jobs looked up per statement under a row limit: 30 whole rows with 16 KiB payloads, every
 * character escaped, stay under the Data API's 1 MiB answer (the same bound as its claims).
 */
const LOOKUP_CHUNK_FOR_ROW_LIMIT = 30;
/**
 * Room kept in a size-limited request for everything but the jobs' document: the statement's text, the
 * other parameters and the request's own envelope.
 */
const REQUEST_OVERHEAD_BYTES = 64 * 1024;

/** Bytes of `text` once written as a JSON string inside a request body (quotes and escapes included). */
function escapedBytes(text: string): number {
  return Buffer.byteLength(JSON.stringify(text), 'utf8');
}

/** Completions per statement under a row limit: 300 × (id, type ≤ 100 chars, duration) stays under 64 KB. */
const COMPLETE_CHUNK_FOR_ROW_LIMIT = 300;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Options shared by typed and untyped enqueue. */
export interface EnqueueOptions {
  /** When to run; default now. */
  runAt?: Date;
  /** At most one job per (type, key) ever exists; a second enqueue returns the first. */
  idempotencyKey?: string;
  /** Lower runs first; default the type's priority (0). */
  priority?: number;
  /** Overrides the type's max attempts for this job. */
  maxAttempts?: number;
}

/** A job to enqueue, typed by the registry: a wrong payload does not compile. */
export type NewJob<M extends JobTypeMap> = {
  [K in keyof M & string]: { type: K; payload: z.input<M[K]> } & EnqueueOptions;
}[keyof M & string];

/** A job to enqueue from untyped input (CLI, HTTP, events): validated at run time only. */
export interface UntypedNewJob extends EnqueueOptions {
  type: string;
  payload: unknown;
}

export interface EnqueueResult {
  job: Job;
  /** False when the idempotency key matched an existing job and nothing was written. */
  created: boolean;
}

/**
 * Whether an enqueue created a job that is due now: what a process without a listening worker (on AWS)
 * checks before waking fetch-ready. A job enqueued without a run time is due when it was created, by the
 * database's clock on both sides: comparing with this process's clock alone would miss it whenever that
 * clock runs a few milliseconds behind the database's.
 */
export function createdJobDueNow(results: readonly EnqueueResult[], now: Date): boolean {
  return results.some(
    (r) =>
      r.created &&
      (r.job.scheduledAt.getTime() <= r.job.createdAt.getTime() ||
        r.job.scheduledAt.getTime() <= now.getTime()),
  );
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
  | (FailResult & { undelivered: false })
  /** No executor began the attempt: handed back uncounted, due at once (`pending` or `retrying`). */
  | {
      id: string;
      jobType: string;
      attempt: number;
      status: 'pending' | 'retrying';
      scheduledAt: Date;
      undelivered: true;
    };

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
  lastHour: {
    jobType: string;
    completed: number;
    failed: number;
    avgDurationMs: number;
    maxDurationMs: number;
    failureRate: number;
  }[];
}

/**
 * A worker in this process that can start a job the moment its enqueue commits (eager start). The tracker
 * asks for a slot before inserting a single due job outside a caller's transaction; with one, it inserts
 * the job already claimed by that worker and hands it over, so the job starts after one commit instead of
 * an insert, a notification and a claim.
 */
export interface EagerStarter {
  /** A free slot for a job of this type, held until `start` or `cancel`; undefined when busy or stopping. */
  reserve(jobType: string): EagerSlot | undefined;
}

export interface EagerSlot {
  /** The job is committed as running with this attempt: run it (or hand it back if no longer able). */
  start(job: ClaimedJob): void;
  /** The insert did not happen (or found the key taken): free the slot. */
  cancel(): void;
}

export interface JobTrackerOptions<M extends JobTypeMap, S> {
  db: Database;
  registry: JobTypeRegistry<M, S>;
  clock?: Clock;
  metrics?: JobMetrics;
}

/**
 * The job lifecycle: enqueue, claim, start, complete, fail (with the retry rule), release, rescue, and the
 * operator's cancel and retry. Every method is one statement (a keyed enqueue that found its key taken adds
 * a lookup, split under the Data API's answer limit; a bulk enqueue over the Data API's request limit is
 * split into statements in one transaction), usable through either database driver.
 */
export class JobTracker<M extends JobTypeMap = JobTypeMap, S = unknown> {
  readonly db: Database;
  readonly registry: JobTypeRegistry<M, S>;
  readonly clock: Clock;
  readonly metrics: JobMetrics;
  private readonly eagerStarters = new Set<EagerStarter>();

  constructor(options: JobTrackerOptions<M, S>) {
    this.db = options.db;
    this.registry = options.registry;
    this.clock = options.clock ?? databaseClock;
    this.metrics = options.metrics ?? noMetrics;
    // Each session's first job insert otherwise costs ~8 ms more than the next (see warmUpInsertSql),
    // including the sessions a pool opens to replace those that reach their lifetime.
    this.db.warmSessionsWith?.(sql.warmUpInsertSql);
  }

  private params(extra: SqlParams): SqlParams {
    return { now: this.clock.now(), ...extra };
  }

  /**
   * A token for one call of a statement that a driver may send again after it committed (see
   * `Database.resendsStatements`), so that the second run recognises the first's work; NULL otherwise.
   */
  private callToken(): SqlValue {
    return this.db.resendsStatements ? uuid(randomUUID()) : null;
  }

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
    return this.enqueueUntyped(jobs as readonly UntypedNewJob[], options);
  }

  /** Enqueue from untyped input (the CLI, events): same validation, checked at run time only. */
  async enqueueUntyped(
    jobs: readonly UntypedNewJob[],
    options: InTransaction = {},
  ): Promise<EnqueueResult[]> {
    if (jobs.length === 0) return [];
    if (jobs.length > MAX_JOBS_PER_ENQUEUE) {
      throw new JobInputError('invalid_option', `at most ${MAX_JOBS_PER_ENQUEUE} jobs per enqueue call`);
    }
    const now = this.clock.now() ?? new Date();
    const validated = jobs.map((job, ord) => this.validateNewJob(job, ord, now));
    const rows = validated.map((v) => v.row);
    if (rows.length === 1 && options.db === undefined && this.eagerStarters.size > 0) {
      const started = await this.enqueueStarted(validated[0]!, now);
      if (started) return [started];
    }
    const db = options.db ?? this.db;
    const requests = rows.length === 1 ? [] : this.rowsPerRequest(rows);
    const insertedKeyed = new Set<string>();
    let inserted = 0;
    let createdAt: Date | null = null;
    // One job: a one-row statement. Many: one JSON document per statement (several under a request limit).
    const insert = async (q: Queryable) => {
      if (rows.length === 1) {
        const row = rows[0]!;
        const one = await q.query<{ created_at: Date }>(sql.insertJobSql, this.oneRowParams(validated[0]!));
        if (one.rows[0]) {
          inserted = 1;
          createdAt = one.rows[0].created_at;
          if (row.idempotency_key !== null) insertedKeyed.add(row.id);
        }
        return;
      }
      for (const rowsJson of requests) {
        const answer = await q.query<InsertAnswerRow>(sql.insertJobsSql, this.params({ rows: rowsJson }));
        const summary = answer.rows[0];
        if (summary?.inserted == null) throw new Error('enqueue got no count from its insert; this is a bug');
        inserted += summary.inserted;
        createdAt ??= summary.created_at;
        for (const part of answer.rows.slice(1))
          for (const id of JSON.parse(part.keyed_ids!)) insertedKeyed.add(id);
      }
    };
    // Several requests are one transaction (the caller's, else one of ours): a batch is all or nothing.
    if (requests.length > 1 && !options.db) await this.db.transaction(insert);
    else {
      try {
        await insert(db);
      } catch (err) {
        // One statement on its own commits by itself. A driver that sends it again after its answer was
        // lost (the Data API's client retries a reset connection or a 5xx) meets the rows it wrote: the
        // ids are this call's own. Inside a caller's transaction the error aborts it, and nothing stays.
        // Only an unkeyed row can meet its id: a keyed one meets its key first, and is skipped (below).
        if (options.db || !isDuplicateJobId(err)) throw err;
        const written = await this.unkeyedAlreadyInserted(rows);
        if (!written) throw err;
        inserted = written.count;
        createdAt = written.createdAt;
      }
    }
    const unkeyedCount = rows.filter((r) => r.idempotency_key === null).length;
    if (inserted !== unkeyedCount + insertedKeyed.size) {
      throw new Error(`enqueue could not account for the rows it inserted; this is a bug`);
    }
    // Keyed rows that were not inserted already exist (possibly committed a moment ago by a concurrent
    // enqueue: ON CONFLICT waited for it, and this second statement sees it), or repeat a key of this call.
    const byKey = new Map<string, Job>();
    const missing = rows.filter((r) => r.idempotency_key !== null && !insertedKeyed.has(r.id));
    // Whole job rows: under a per-answer limit (the Data API's 1 MiB) a few at a time.
    const lookupChunk = this.db.maxRowBytes === undefined ? missing.length : LOOKUP_CHUNK_FOR_ROW_LIMIT;
    for (let from = 0; from < missing.length; from += lookupChunk) {
      const keys = missing.slice(from, from + lookupChunk);
      const existing = await db.query<JobRow>(sql.jobsByIdempotencyKeySql, {
        keys: json(keys.map((r) => ({ job_type: r.job_type, idempotency_key: r.idempotency_key }))),
      });
      for (const job of existing.rows.map(rowToJob))
        byKey.set(keyOf({ job_type: job.jobType, idempotency_key: job.idempotencyKey }), job);
    }
    const results = rows.map((r): EnqueueResult => {
      if (r.idempotency_key === null || insertedKeyed.has(r.id)) {
        return { job: newJobFromInput(validated[r.ord]!, createdAt!), created: true };
      }
      const job = byKey.get(keyOf(r));
      if (!job) throw new Error(`enqueue lost track of job #${r.ord} (${r.job_type}); this is a bug`);
      // The job holding the key has the id made for this row: this call's own earlier send of the insert
      // wrote it, and its answer was lost (the resend met the key, or another row's id, above).
      return { job, created: job.id === r.id };
    });
    const perType = new Map<string, number>();
    for (const r of results) if (r.created) perType.set(r.job.jobType, (perType.get(r.job.jobType) ?? 0) + 1);
    for (const [type, count] of perType) this.metrics.jobsEnqueued(type, count);
    return results;
  }

  /**
   * After an insert statement failed on a job id that exists: whether that statement had in fact been
   * applied, by an earlier send whose answer was lost. It had if every row without a key is there; then
   * their count and creation time (one instant: the statement's). Keyed rows are left to the lookup by
   * key, which finds this call's own ids. Undefined if not: the error stands.
   */
  private async unkeyedAlreadyInserted(
    rows: readonly NewJobRow[],
  ): Promise<{ count: number; createdAt: Date } | undefined> {
    const unkeyed = rows.filter((r) => r.idempotency_key === null);
    const found = await this.db.query<{ id: string; created_at: Date }>(sql.jobsCreatedByIdSql, {
      ids: json(unkeyed.map((r) => r.id)),
    });
    const first = found.rows[0];
    if (!first || found.rows.length !== unkeyed.length) return undefined;
    return { count: found.rows.length, createdAt: first.created_at };
  }

  /**
   * The rows as the JSON documents of one insert each: one document, unless the driver limits its
   * request size (the Data API: 4 MiB, in which the document travels as an escaped JSON string; 10,000
   * jobs with large payloads can need 40 MiB). Then each document fits one request, whole rows only.
   */
  private rowsPerRequest(rows: readonly NewJobRow[]): TypedValue[] {
    const limit = this.db.maxRequestBytes;
    if (limit === undefined) return [json(rows)];
    const budget = limit - REQUEST_OVERHEAD_BYTES;
    const whole = JSON.stringify(rows);
    // Escaping never shortens a text, and UTF-8 has at least a byte per UTF-16 unit: a document longer than
    // the budget must be split, without escaping the whole of it first (10,000 large payloads: ~1 GB).
    if (whole.length <= budget && escapedBytes(whole) <= budget) return [{ sqlType: 'json', text: whole }];
    const documents: TypedValue[] = [];
    let current: string[] = [];
    let bytes = 2; // the brackets
    for (const row of rows) {
      const text = JSON.stringify(row);
      const rowBytes = escapedBytes(text) + 1; // and its comma
      if (current.length > 0 && bytes + rowBytes > budget) {
        documents.push({ sqlType: 'json', text: `[${current.join(',')}]` });
        current = [];
        bytes = 2;
      }
      current.push(text);
      bytes += rowBytes;
    }
    documents.push({ sqlType: 'json', text: `[${current.join(',')}]` });
    return documents;
  }

  /**
   * Has `connections` database sessions (opened if need be) pay ahead what a session's first job insert
   * costs, so the first jobs this process enqueues or starts do not (`warmUpInsertSql`). Writes nothing.
   * node-postgres only: the Data API keeps its sessions to itself. Best effort: a failure here is met
   * again, and reported, by the next real statement.
   */
  async warmUp(connections: number): Promise<void> {
    if (this.db.driverName !== 'pg') return;
    // Statements issued together run on different pooled sessions.
    await Promise.all(
      Array.from({ length: connections }, () => this.db.query(sql.warmUpInsertSql).catch(() => undefined)),
    );
  }

  /**
   * Lets `starter` take single due jobs enqueued through this tracker (eager start); returns the detach.
   * Jobs enqueued inside a caller's transaction, scheduled ahead, or in batches always go through the queue.
   */
  attachEagerStarter(starter: EagerStarter): () => void {
    this.eagerStarters.add(starter);
    return () => {
      this.eagerStarters.delete(starter);
    };
  }

  /**
   * Eager start: inserts a due job already claimed by a local worker with a free slot, and hands it over.
   * Undefined when no worker has a slot, or the (type, key) already exists (the caller then enqueues
   * normally, which finds the existing job). A failed insert frees the slot and throws, writing nothing.
   */
  private async enqueueStarted(input: ValidatedJob, now: Date): Promise<EnqueueResult | undefined> {
    const { row } = input;
    if (row.scheduled_at !== null && Date.parse(row.scheduled_at) > now.getTime()) return undefined;
    // A type with a concurrency limit goes through the claim, which is where the limit is kept.
    if (this.registry.get(row.job_type)?.concurrency !== undefined) return undefined;
    let slot: EagerSlot | undefined;
    for (const starter of this.eagerStarters) {
      slot = starter.reserve(row.job_type);
      if (slot) break;
    }
    if (!slot) return undefined;
    let inserted: QueryResult<StartedRow>;
    try {
      inserted = await this.db.query<StartedRow>(sql.insertStartedJobSql, this.oneRowParams(input));
    } catch (err) {
      slot.cancel();
      throw err;
    }
    const ins = inserted.rows[0];
    if (!ins) {
      slot.cancel();
      return undefined;
    }
    // Created, started and leased at the statement's one instant; scheduled when given (never ahead), else then.
    const job: Job = {
      ...newJobFromInput(input, ins.created_at),
      status: 'running',
      attempts: 1,
      startedAt: ins.created_at,
      leaseExpiresAt: new Date(ins.created_at.getTime() + row.lease_seconds * 1000),
    };
    this.metrics.jobsEnqueued(job.jobType, 1);
    slot.start(job); // a Job is a ClaimedJob, as startAttempt's answer is for an executor

    return { job, created: true };
  }

  /** One validated job as the parameters of the one-row inserts (its payload's JSON text as made). */
  private oneRowParams({ row, payloadJson }: ValidatedJob): SqlParams {
    return this.params({
      id: row.id,
      job_type: row.job_type,
      payload: payloadJson,
      scheduled_at: row.scheduled_at,
      max_attempts: row.max_attempts,
      backoff_base_seconds: row.backoff_base_seconds,
      backoff_cap_seconds: row.backoff_cap_seconds,
      lease_seconds: row.lease_seconds,
      priority: row.priority,
      idempotency_key: row.idempotency_key,
    });
  }

  private validateNewJob(job: UntypedNewJob, ord: number, now: Date): ValidatedJob {
    if (typeof job !== 'object' || job === null)
      throw new JobInputError('invalid_option', 'a job must be an object');
    const jobType = this.registry.require(String(job.type));
    const payload = this.registry.parsePayload(jobType.type, job.payload ?? {});
    const payloadJson = JSON.stringify(payload);
    const bytes = Buffer.byteLength(payloadJson, 'utf8');
    if (bytes > MAX_PAYLOAD_BYTES) {
      throw new JobInputError(
        'payload_too_large',
        `payload of ${jobType.type} is ${bytes} bytes; the limit is ${MAX_PAYLOAD_BYTES} bytes of JSON`,
      );
    }
    const key = job.idempotencyKey;
    if (key !== undefined) {
      if (typeof key !== 'string' || key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
        throw new JobInputError(
          'invalid_option',
          `idempotency key must be 1 to ${MAX_IDEMPOTENCY_KEY_LENGTH} characters (got ${typeof key === 'string' ? key.length : typeof key})`,
        );
      }
      if (key.includes('\u0000'))
        throw new JobInputError('invalid_option', 'idempotency key contains a NUL character');
    }
    const priority = job.priority ?? jobType.priority;
    if (!Number.isInteger(priority) || priority < PRIORITY_RANGE.min || priority > PRIORITY_RANGE.max) {
      throw new JobInputError(
        'invalid_option',
        `priority must be an integer from ${PRIORITY_RANGE.min} to ${PRIORITY_RANGE.max} (got ${String(priority)})`,
      );
    }
    const maxAttempts = job.maxAttempts ?? jobType.retry.maxAttempts;
    if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 100) {
      throw new JobInputError(
        'invalid_option',
        `maxAttempts must be an integer from 1 to 100 (got ${String(maxAttempts)})`,
      );
    }
    let scheduledAt: string | null = null;
    if (job.runAt !== undefined) {
      if (!(job.runAt instanceof Date) || Number.isNaN(job.runAt.getTime())) {
        throw new JobInputError('invalid_option', 'runAt must be a valid date');
      }
      if (job.runAt.getTime() - now.getTime() > MAX_SCHEDULE_AHEAD_MS) {
        throw new JobInputError('invalid_option', 'runAt is more than 5 years ahead');
      }
      // A time in the past simply means "due now": it keeps its place in due-time order.
      scheduledAt = job.runAt.toISOString();
    }
    const row = {
      ord,
      id: newJobId(),
      job_type: jobType.type,
      payload,
      scheduled_at: scheduledAt,
      max_attempts: maxAttempts,
      backoff_base_seconds: jobType.retry.backoffBaseSeconds,
      backoff_cap_seconds: jobType.retry.backoffCapSeconds,
      lease_seconds: jobType.leaseSeconds,
      priority,
      idempotency_key: key ?? null,
    };
    return { row, payloadJson };
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
    const limits = this.registry.concurrencyLimitsJson();
    const params = this.params({
      limit,
      start_now: options.startNow ?? false,
      dispatch_lease_seconds: DISPATCH_LEASE_SECONDS,
      claim_token: this.callToken(),
    });
    if (limits !== null || options.jobType !== undefined) {
      Object.assign(params, { limits: limits ?? '{}', only_type: options.jobType ?? null });
      if (this.db.maxRowBytes === undefined) {
        const doc = await this.db.query<{ jobs: string }>(sql.claimLimitedAsDocumentSql, params);
        return claimedJobsFromDocument(doc.rows[0]?.jobs ?? '[]');
      }
      const res = await this.db.query<JobRow>(sql.claimLimitedSql, params);
      return res.rows.map(rowToClaimedJob);
    }
    if (this.db.maxRowBytes === undefined) {
      const doc = await this.db.query<{ jobs: string }>(sql.claimDueJobsAsDocumentSql, params);
      return claimedJobsFromDocument(doc.rows[0]?.jobs ?? '[]');
    }
    const res = await this.db.query<JobRow>(sql.claimDueJobsSql, params);
    return res.rows.map(rowToClaimedJob);
  }

  /**
   * The local worker's claim (attempts begun at once): the claimed jobs and, when the claim came back
   * short, when the earliest job left waiting is due (`null`: none), in the same statement. `undefined` when
   * the claim was full (more may be due now).
   */
  async claimForWorker(limit: number): Promise<WorkerClaim> {
    const limits = this.registry.concurrencyLimitsJson();
    if (this.db.maxRowBytes !== undefined) {
      // Rows under a row limit; the next due time, only if needed, in a second statement.
      const jobs = await this.fetchReady(limit, { startNow: true });
      if (jobs.length < limit && limits !== null) {
        // A type at its limit may have left due jobs behind: ask again soon.
        return { jobs, nextDueAt: this.soonAfterALimit() };
      }
      return { jobs, nextDueAt: jobs.length < limit ? await this.nextDueAt() : undefined };
    }
    assertClaimLimit(limit);
    if (limits !== null) {
      const res = await this.db.query<{ jobs: string; next_due_at: Date | null; left_behind: boolean }>(
        sql.claimLimitedForWorkerSql,
        this.params({
          limit,
          start_now: true,
          dispatch_lease_seconds: DISPATCH_LEASE_SECONDS,
          claim_token: this.callToken(),
          limits,
          only_type: null,
        }),
      );
      const row = res.rows[0];
      const jobs = claimedJobsFromDocument(row?.jobs ?? '[]');
      if (jobs.length >= limit) return { jobs, nextDueAt: undefined };
      return { jobs, nextDueAt: row?.left_behind ? this.soonAfterALimit() : (row?.next_due_at ?? null) };
    }
    const res = await this.db.query<{ jobs: string; next_due_at: Date | null }>(
      sql.claimDueJobsForWorkerSql,
      this.params({
        limit,
        start_now: true,
        dispatch_lease_seconds: DISPATCH_LEASE_SECONDS,
        claim_token: this.callToken(),
      }),
    );
    const jobs = claimedJobsFromDocument(res.rows[0]?.jobs ?? '[]');
    return { jobs, nextDueAt: jobs.length < limit ? (res.rows[0]?.next_due_at ?? null) : undefined };
  }

  /**
   * When a worker whose claim left due jobs behind (a type at its concurrency limit) asks again: slots
   * elsewhere free up as other workers finish, and nothing notifies for that.
   */
  private soonAfterALimit(): Date {
    return new Date((this.clock.now() ?? new Date()).getTime() + LIMITED_TYPE_POLL_MS);
  }

  /**
   * Records that an executor began `attempt`. Returns the job for the first delivery of the current
   * attempt, `null` for a duplicate delivery or a stale attempt (do not run it).
   */
  async startAttempt(id: string, attempt: number): Promise<Job | null> {
    assertUuid(id);
    const res = await this.db.query<JobRow>(
      sql.startAttemptSql,
      this.params({ id: uuid(id), attempt, token: uuid(randomUUID()) }),
    );
    return res.rows[0] ? rowToJob(res.rows[0]) : null;
  }

  /** Completes `attempt` of a job. Returns false when the attempt is no longer current (fenced out). */
  async markCompleted(id: string, attempt: number, options: { durationMs?: number } = {}): Promise<boolean> {
    assertUuid(id);
    const applied = await this.completeMany([{ id, attempt, durationMs: options.durationMs }]);
    return applied.length === 1;
  }

  /** Completes many attempts in one statement; returns the ids that applied. */
  async completeMany(items: readonly CompletedAttempt[]): Promise<string[]> {
    if (items.length === 0) return [];
    // The answer lists every applied attempt in one row: keep that row under a driver's row limit.
    const chunk = this.db.maxRowBytes === undefined ? items.length : COMPLETE_CHUNK_FOR_ROW_LIMIT;
    const applied: string[] = [];
    for (let from = 0; from < items.length; from += chunk) {
      const part = chunk >= items.length ? items : items.slice(from, from + chunk);
      const res = await this.db.query<{ applied: string }>(
        sql.completeAttemptsSql,
        this.params({
          items: json(
            part.map((i) => ({ id: i.id, attempt: i.attempt, duration_ms: roundMs(i.durationMs) })),
          ),
          token: this.callToken(),
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

  /**
   * Completes `attempt` and claims the next due job of `jobType` (begun at once, within the type's
   * concurrency limit), in one statement: an executor that keeps its slot pays one round trip per job.
   * `completed` is false when the attempt was fenced out; `next` is null when no job of the type is due
   * or the type is at its limit.
   */
  async completeAndClaimNext(
    done: CompletedAttempt,
    jobType: string,
  ): Promise<{ completed: boolean; next: ClaimedJob | null }> {
    assertUuid(done.id);
    const res = await this.db.query<JobRow & { applied: boolean }>(
      sql.completeAndClaimNextSql,
      this.params({
        id: uuid(done.id),
        attempt: done.attempt,
        duration_ms: roundMs(done.durationMs),
        token: uuid(randomUUID()),
        limits: this.registry.concurrencyLimitsJson() ?? '{}',
        only_type: jobType,
        dispatch_lease_seconds: DISPATCH_LEASE_SECONDS,
      }),
    );
    const row = res.rows[0];
    const completed = row?.applied === true;
    if (completed) this.metrics.attemptFinished(jobType, 'completed', roundMs(done.durationMs));
    return { completed, next: row?.id ? rowToClaimedJob(row) : null };
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
    const [result] = await this.failMany([{ id, attempt, error, ...options }]);
    return result ?? null;
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
        token: this.callToken(),
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
    const res = await this.db.query<FailRow>(sql.rescueExpiredLeasesSql, this.params({ limit, token: null }));
    return res.rows.map(
      (r): RescueResult =>
        r.outcome === 'undelivered'
          ? {
              id: r.id,
              jobType: r.job_type,
              attempt: r.attempts,
              status: r.status === 'pending' ? 'pending' : 'retrying',
              scheduledAt: r.scheduled_at,
              undelivered: true,
            }
          : { ...this.reportFailure(r, 'lease_expired'), undelivered: false },
    );
  }

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
    const res = await this.db.query<{ next_due_at: Date | null }>(sql.nextDueAtSql);
    return res.rows[0]?.next_due_at ?? null;
  }

  /** Counts by status and type, queue depth, overdue running jobs, and the last hour's outcomes. */
  async stats(windowSeconds = 3600): Promise<JobStats> {
    const [counts, queue, overdue, recent] = await Promise.all([
      this.db.query<{ job_type: string; status: JobStatus; count: number }>(sql.countsByStatusAndTypeSql),
      this.queueState(),
      this.db.query<{ overdue: number }>(sql.overdueRunningSql, this.params({})),
      this.db.query<{
        job_type: string;
        outcome: string;
        count: number;
        avg_duration_ms: number;
        max_duration_ms: number;
      }>(sql.recentOutcomesSql, this.params({ window_seconds: windowSeconds })),
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
      else if (r.outcome === 'failed' || r.outcome === 'lease_expired') t.failed += r.count;
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
      lastHour,
    };
  }

  /**
   * Deletes finished jobs (and their execution rows) completed before `before`, in bounded batches so no
   * statement holds locks for long. Returns how many jobs were deleted.
   */
  async pruneFinished(options: {
    before: Date;
    statuses: readonly ('completed' | 'cancelled' | 'failed')[];
    jobType?: string;
    batchSize?: number;
    maxBatches?: number;
  }): Promise<number> {
    if (!(options.before instanceof Date) || Number.isNaN(options.before.getTime())) {
      throw new JobInputError('invalid_option', 'prune needs a valid cutoff time');
    }
    for (const s of options.statuses) {
      if (!['completed', 'cancelled', 'failed'].includes(s)) {
        throw new JobInputError('invalid_option', `only finished jobs can be pruned (got status "${s}")`);
      }
    }
    if (options.jobType !== undefined) this.registry.require(options.jobType);
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

/** A local worker's claim: the jobs, and for a short claim when the next waiting job is due. */
export interface WorkerClaim {
  jobs: ClaimedJob[];
  /** Due time of the earliest job left waiting (`null`: none); `undefined` when the claim was full. */
  nextDueAt: Date | null | undefined;
}

/** The insert's answer: a summary row (part 0), then the ids of inserted keyed rows in chunks. */
interface InsertAnswerRow {
  [column: string]: unknown;
  part: number;
  inserted: number | null;
  created_at: Date | null;
  keyed_ids: string | null;
}

/** What the eager insert returns of its job: the statement's time, from which its start and lease follow. */
interface StartedRow {
  [column: string]: unknown;
  created_at: Date;
}

/** A job's row as the insert takes it (one element of its JSON array). */
interface NewJobRow {
  ord: number;
  id: string;
  job_type: string;
  payload: unknown;
  scheduled_at: string | null;
  max_attempts: number;
  backoff_base_seconds: number;
  backoff_cap_seconds: number;
  lease_seconds: number;
  priority: number;
  idempotency_key: string | null;
}

/** A validated job: its row, and its payload's JSON text (measured for the size limit, parsed for the result). */
interface ValidatedJob {
  row: NewJobRow;
  payloadJson: string;
}

/** A new job as stored: its input, pending, no attempt yet; due at its runAt or when it was created. */
function newJobFromInput({ row: input, payloadJson }: ValidatedJob, createdAt: Date): Job {
  return {
    id: input.id,
    jobType: input.job_type,
    // As stored: JSON, not the caller's object.
    payload: JSON.parse(payloadJson),
    status: 'pending',
    attempts: 0,
    maxAttempts: input.max_attempts,
    priority: input.priority,
    idempotencyKey: input.idempotency_key,
    scheduledAt: input.scheduled_at === null ? createdAt : new Date(input.scheduled_at),
    startedAt: null,
    completedAt: null,
    leaseExpiresAt: null,
    lastError: null,
    createdAt,
    updatedAt: createdAt,
  };
}

/** A unique violation of the jobs' primary key: an insert met a job id that already exists. */
function isDuplicateJobId(err: unknown): boolean {
  return err instanceof DatabaseError && err.code === '23505' && err.message.includes('"jobs_pkey"');
}

function keyOf(r: { job_type: string; idempotency_key: string | null }): string {
  return `${r.job_type}\u0000${r.idempotency_key}`;
}

function roundMs(ms: number | undefined): number | null {
  return ms === undefined ? null : Math.max(0, Math.round(ms));
}

function assertClaimLimit(limit: number): void {
  if (!Number.isInteger(limit) || limit < 1)
    throw new JobInputError('invalid_option', 'limit must be a positive integer');
}

/** Job ids are UUIDs; anything else is rejected before it reaches SQL. */
export function assertUuid(id: string): void {
  if (typeof id !== 'string' || !UUID_RE.test(id)) {
    throw new JobInputError('invalid_id', `"${truncate(String(id), 60)}" is not a job id (a UUID)`);
  }
}
