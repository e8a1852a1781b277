import type { z } from 'zod';
import { json, type Queryable, type QueryResult, type SqlParams, uuid } from '../db/port.js';
import { SLOT_LEASE_SECONDS } from './attempts.js';
import {
  type InsertAnswerRow,
  isDuplicateJobId,
  keyOf,
  type NewJobRow,
  newJobFromInput,
  type StartedRow,
  type ValidatedJob,
} from './enqueue-rows.js';
import { JobInputError } from './errors.js';
import { newJobId } from './ids.js';
import {
  type DebounceInput,
  parseConcurrencyKey,
  parseDebounce,
  parseIdempotencyKey,
  parseMaxAttempts,
  parsePriority,
  parseRunAt,
  requirePayloadObject,
} from './job-input.js';
import { type ClaimedJob, type Job, type JobRow, rowToClaimedJob, rowToJob } from './model.js';
import type { InTransaction, JobTypeMap } from './registry.js';
import * as sql from './sql.js';
import { TrackerPart } from './tracker-part.js';

/**
 * Enqueueing: validation against the registry, one statement per request (several in one transaction
 * when a driver limits its request size), answers that survive a driver's resend, and the eager start.
 */

/**
 * Payloads are limited to 16 KiB of JSON. A claim through the Data API returns its rows in one response
 * of at most 1 MiB, and a claim whose response is lost leaves its jobs running until their leases expire:
 * 30 rows of 16 KiB, even if every character needed escaping in the response, stay under it. It also keeps
 * a row under the Data API's 64 KB-per-row limit and an EventBridge entry far under its size limit.
 */
export const MAX_PAYLOAD_BYTES = 16 * 1024;
export {
  MAX_ATTEMPTS_RANGE,
  MAX_IDEMPOTENCY_KEY_LENGTH,
  MAX_SCHEDULE_AHEAD_MS,
  PRIORITY_RANGE,
} from './job-input.js';
/** Bulk enqueue limit per call (one statement). */
export const MAX_JOBS_PER_ENQUEUE = 10_000;

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
  /**
   * Run once after a burst: while the type has a pending job with this key that has not started, this
   * enqueue replaces its payload (and priority and max attempts) and moves its run time to now +
   * `windowSeconds`, never past `maxWaitSeconds` after the burst's first enqueue. Once the job has been
   * claimed, the next enqueue starts a new burst. Enqueued on its own (one job per call), without
   * `runAt` (its window says when) or `idempotencyKey`.
   */
  debounce?: { key: string; windowSeconds: number; maxWaitSeconds?: number };
}

/** A job to enqueue, typed by the registry: a wrong payload does not compile. */
export type NewJob<M extends JobTypeMap> = {
  [K in keyof M & string]: { type: K; payload: z.input<M[K]> } & EnqueueOptions;
}[keyof M & string];

/**
 * A job to enqueue from untyped input (CLI, console, HTTP, events): validated at run time only, by the
 * same rules as a typed job (`job-input.ts`). Options may come as text, as a form field, a command-line
 * option or a JSON event carries them: `runAt` as ISO 8601 with a zone, numbers as decimal integers.
 */
export interface UntypedNewJob {
  type: string;
  payload: unknown;
  runAt?: Date | string;
  idempotencyKey?: string;
  priority?: number | string;
  maxAttempts?: number | string;
  debounce?: DebounceInput;
}

/** A schedule's tick with the job it enqueues (`enqueueScheduleTicks`). */
export interface ScheduleTickJob {
  schedule: string;
  /** The tick, to the minute. */
  tick: Date;
  job: UntypedNewJob;
}

export interface EnqueueResult {
  job: Job;
  /**
   * False when the idempotency key matched an existing job and nothing was written, or when a debounced
   * enqueue joined its key's pending job (`job` is that job, with this payload and its new run time).
   */
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
  /**
   * Set when the job's type has a concurrency limit and the worker holds no slot of it that no job uses:
   * the insert takes a free slot of the type for this worker (its id), or inserts nothing.
   */
  readonly takeSlotFor?: string;
  /** The job is committed as running with this attempt: run it (or hand it back if no longer able). */
  start(job: ClaimedJob): void;
  /** The insert did not happen (or found the key taken): free the slot. */
  cancel(): void;
}

export class JobEnqueuer<M extends JobTypeMap, S> extends TrackerPart<M, S> {
  private readonly eagerStarters = new Set<EagerStarter>();

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
    const debounced = validated.find((v) => v.debounce !== null);
    if (debounced) {
      if (validated.length > 1) {
        throw new JobInputError(
          'invalid_option',
          'a debounced job is enqueued on its own (one job per call): a batch cannot replace its own rows',
        );
      }
      return [await this.enqueueDebounced(debounced, options)];
    }
    if (validated.length === 1 && options.db === undefined && this.eagerStarters.size > 0) {
      const started = await this.enqueueStarted(validated[0]!, now);
      if (started) return [started];
    }
    return this.insertValidated(validated, options);
  }

  /**
   * AWS's quiet path (`AwsJobClient`): ONE due job enqueued and its type's next due job claimed for an
   * executor, in one statement (`insertJobAndClaimSql`), within :limits (the claims' limits, their slot
   * rows made). Undefined when the job is scheduled ahead: enqueue it as usual. `claimed` may be an older
   * due job of the type, or null (no free slot, paused, over its rate, or the key existed).
   */
  async enqueueAndClaim(
    job: UntypedNewJob,
    limits: string,
    dispatchLeaseSeconds: number,
  ): Promise<{ result: EnqueueResult; claimed: ClaimedJob | null } | undefined> {
    const now = this.clock.now() ?? new Date();
    const input = this.validateNewJob(job, 0, now);
    // Scheduled ahead, or debounced (it replaces its key's waiting job): the usual enqueue.
    if (input.row.scheduled_at !== null || input.debounce !== null) return undefined;
    const claim = {
      limits,
      dispatch_lease_seconds: dispatchLeaseSeconds,
      claim_token: this.limits.callToken(),
    };
    let answer: (JobRow & { enqueued_at: Date }) | undefined;
    try {
      const res = await this.db.query<JobRow & { enqueued_at: Date }>(sql.insertJobAndClaimSql, {
        ...this.oneRowParams(input),
        ...claim,
      });
      answer = res.rows[0];
    } catch (err) {
      // An earlier send of this statement committed and its answer was lost (the id is this call's own):
      // settled below as a skipped insert.
      if (!isDuplicateJobId(err)) throw err;
    }
    if (answer) {
      this.metrics.jobsEnqueued(input.row.job_type, 1);
      return {
        result: { job: newJobFromInput(input, answer.enqueued_at), created: true },
        claimed: answer.id ? rowToClaimedJob(answer) : null,
      };
    }
    // Skipped: its key exists, or an earlier send wrote it. The insert path says which (the same id and
    // key), and a resent statement's first claim is found by its token (a claim of none: `prior` only).
    const [result] = await this.insertValidated([input], {});
    if (!result!.created || claim.claim_token === null) return { result: result!, claimed: null };
    const prior = await this.db.query<JobRow>(sql.claimLimitedSql, {
      ...this.params({ limit: 0, start_now: false, only_type: input.row.job_type }),
      ...claim,
    });
    return { result: result!, claimed: prior.rows[0] ? rowToClaimedJob(prior.rows[0]) : null };
  }

  /** Inserts validated jobs: one statement per request (several in one transaction under a request limit). */
  private async insertValidated(
    validated: readonly ValidatedJob[],
    options: InTransaction,
  ): Promise<EnqueueResult[]> {
    const rows = validated.map((v) => v.row);
    const db = options.db ?? this.db;
    const requests = rows.length === 1 ? [] : this.limits.insertDocuments(rows);
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
    const lookupChunk = this.limits.jobRowsPerStatement;
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
   * Enqueues the jobs of schedule ticks that no firer has recorded yet, and records them, in one
   * transaction (`recordScheduleTicksSql`): each tick is enqueued once even after retention deleted its
   * job, which the tick's job key alone could not promise. Results in input order; null for a tick
   * already recorded. Jobs are enqueued in input order, so ticks given oldest first run oldest first.
   * Bad input (a job its type refuses) rolls back the ticks too: nothing written.
   */
  async enqueueScheduleTicks(ticks: readonly ScheduleTickJob[]): Promise<(EnqueueResult | null)[]> {
    if (ticks.length === 0) return [];
    const at = (schedule: string, tick: Date | string) => `${schedule}\u0000${new Date(tick).getTime()}`;
    const token = newJobId();
    return this.db.transaction(async (tx) => {
      const recorded = await tx.query<{ schedule: string; tick: Date }>(
        sql.recordScheduleTicksSql,
        this.params({
          token,
          ticks: json(ticks.map((t) => ({ schedule: t.schedule, tick: t.tick.toISOString() }))),
        }),
      );
      const fresh = new Set(recorded.rows.map((r) => at(r.schedule, r.tick)));
      const chosen = ticks.filter((t) => fresh.has(at(t.schedule, t.tick)));
      const results = await this.enqueueUntyped(
        chosen.map((t) => t.job),
        { db: tx },
      );
      const byTick = new Map(chosen.map((t, i) => [at(t.schedule, t.tick), results[i]!]));
      return ticks.map((t) => byTick.get(at(t.schedule, t.tick)) ?? null);
    });
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
   * Has `connections` database sessions (opened if need be) pay ahead what a session's first job insert
   * costs, so the first jobs this process enqueues or starts do not (`warmUpInsertSql`). Writes nothing.
   * node-postgres only: the Data API keeps its sessions to itself. Best effort: a failure here is met
   * again, and reported, by the next real statement.
   */
  async warmUp(connections: number): Promise<void> {
    if (!this.limits.hasOwnSessions) return;
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

  /** A type with a rate limit, its own or the stack's. */
  private isRateLimited(type: string): boolean {
    return this.rateLimitOverrides[type] !== undefined || this.registry.get(type)?.rateLimit !== undefined;
  }

  /**
   * Eager start: inserts a due job already claimed by a local worker with a free slot, and hands it over.
   * Undefined when no worker has a slot, the (type, key) already exists, or the type is paused (the caller
   * then enqueues normally, which finds the existing job or queues the new one to wait for the resume). A
   * failed insert frees the slot and throws, writing nothing.
   */
  private async enqueueStarted(input: ValidatedJob, now: Date): Promise<EnqueueResult | undefined> {
    const { row } = input;
    if (row.scheduled_at !== null && Date.parse(row.scheduled_at) > now.getTime()) return undefined;
    // A job with a concurrency key, or of a type with a rate limit, goes through a claim: the claim is what
    // keeps its key's limit, and what takes a rate slot (an eager start takes none).
    if (row.concurrency_key !== null || this.isRateLimited(row.job_type)) return undefined;
    // A type with a concurrency limit starts eagerly in a slot its worker holds and no job uses, or in a
    // free slot the insert takes for the worker (`takeSlotFor`).
    let slot: EagerSlot | undefined;
    for (const starter of this.eagerStarters) {
      slot = starter.reserve(row.job_type);
      if (slot) break;
    }
    if (!slot) return undefined;
    // The type's own limit: the slots a worker counts are those of the types that declare one.
    const maxRunning = this.registry.get(row.job_type)?.concurrency;
    if (slot.takeSlotFor !== undefined && maxRunning === undefined) {
      slot.cancel(); // no limit of its own: no slot to take, so no start outside the claims
      return undefined;
    }
    let inserted: QueryResult<StartedRow>;
    try {
      inserted =
        slot.takeSlotFor === undefined
          ? await this.db.query<StartedRow>(sql.insertStartedJobSql, this.oneRowParams(input))
          : await this.db.query<StartedRow>(sql.insertStartedJobTakingSlotSql, {
              ...this.oneRowParams(input),
              worker: uuid(slot.takeSlotFor),
              max_running: maxRunning ?? null,
              slot_lease_seconds: SLOT_LEASE_SECONDS,
            });
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

  /**
   * A debounced job: inserted at the end of its window, or joined to its key's pending job (one statement,
   * `upsertDebouncedJobSql`). Never started eagerly: it is due only when its burst ends.
   */
  private async enqueueDebounced(input: ValidatedJob, options: InTransaction): Promise<EnqueueResult> {
    const debounce = input.debounce!;
    const res = await (options.db ?? this.db).query<JobRow & { created: boolean }>(
      sql.upsertDebouncedJobSql,
      {
        ...this.oneRowParams(input),
        debounce_key: debounce.key,
        window_seconds: debounce.windowSeconds,
        max_wait_seconds: debounce.maxWaitSeconds,
      },
    );
    const row = res.rows[0];
    if (!row) throw new Error('a debounced enqueue got no row back; this is a bug');
    const created = row.created === true;
    if (created) this.metrics.jobsEnqueued(input.row.job_type, 1);
    return { job: rowToJob(row), created };
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
      concurrency_key: row.concurrency_key,
    });
  }

  private validateNewJob(job: UntypedNewJob, ord: number, now: Date): ValidatedJob {
    if (typeof job !== 'object' || job === null)
      throw new JobInputError('invalid_option', 'a job must be an object');
    const jobType = this.registry.require(String(job.type));
    const payload = this.registry.parsePayload(
      jobType.type,
      requirePayloadObject(job.payload === undefined ? {} : job.payload),
    );
    const payloadJson = JSON.stringify(payload);
    const bytes = Buffer.byteLength(payloadJson, 'utf8');
    if (bytes > MAX_PAYLOAD_BYTES) {
      throw new JobInputError(
        'payload_too_large',
        `payload of ${jobType.type} is ${bytes} bytes; the limit is ${MAX_PAYLOAD_BYTES} bytes of JSON`,
      );
    }
    const key = job.idempotencyKey === undefined ? undefined : parseIdempotencyKey(job.idempotencyKey);
    const debounce = job.debounce === undefined ? null : parseDebounce(job.debounce);
    if (debounce && key !== undefined) {
      throw new JobInputError(
        'invalid_option',
        'a debounced job takes no idempotency key: its debounce key already names the burst it joins',
      );
    }
    if (debounce && job.runAt !== undefined) {
      throw new JobInputError(
        'invalid_option',
        'a debounced job takes no run time: it runs when its window ends after the last enqueue',
      );
    }
    const priority = parsePriority(job.priority ?? jobType.priority);
    const maxAttempts = parseMaxAttempts(job.maxAttempts ?? jobType.retry.maxAttempts);
    let scheduledAt: string | null = null;
    if (job.runAt !== undefined) {
      const runAt = parseRunAt(job.runAt, now);
      // A time in the past means "due now" and is stored as now: a 1970 runAt would otherwise jump the
      // queue and read as a job waiting for decades in stats and the oldest-ready alarm.
      scheduledAt = runAt.getTime() > now.getTime() ? runAt.toISOString() : null;
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
      concurrency_key: jobType.concurrencyKey
        ? parseConcurrencyKey(jobType.type, jobType.concurrencyKey.field, payload)
        : null,
    };
    return { row, payloadJson, debounce };
  }
}
