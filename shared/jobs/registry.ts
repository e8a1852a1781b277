import type { z } from 'zod';
import type { Queryable } from '../db/port.js';
import { JobInputError, type RetryJobLater } from './errors.js';
import { PRIORITY_RANGE } from './job-input.js';
import type { ClaimedJob } from './model.js';
import { DEFAULT_RETRY, RETRY_LIMITS, type RetrySettings } from './retry-policy.js';

/**
 * What an executor gets besides its payload. `services` is whatever the adapter running it provides
 * (database, notifier, price source…); see `shared/job-types/services.ts` for the lending platform's.
 */
export interface JobContext<S = unknown> {
  job: ClaimedJob;
  /** The attempt being run (1-based): the fencing token of this run. */
  attempt: number;
  /** Aborted when the attempt's timeout passes or the worker shuts down. */
  signal: AbortSignal;
  services: S;
}

/**
 * An executor does the job's work. It resolves when done, throws to fail the attempt (retried under the
 * retry rule), throws `PermanentJobError` to fail the job at once, or returns `RetryJobLater` to be run
 * again at a given time.
 */
export type JobExecutor<P, S> = (payload: P, ctx: JobContext<S>) => Promise<undefined | RetryJobLater>;

// biome-ignore lint/suspicious/noExplicitAny: schema variance; every public use is through a concrete zod type
type AnySchema = z.ZodType<any, any>;

export interface JobTypeDefinition<
  T extends string = string,
  Schema extends AnySchema = AnySchema,
  S = unknown,
> {
  /** The job type's name, e.g. `interest-accrual`. */
  type: T;
  description: string;
  /** Validates the payload at enqueue and again before execution. JSON in, JSON out: no transforms. */
  schema: Schema;
  execute: JobExecutor<z.output<Schema>, S>;
  retry?: Partial<RetrySettings>;
  /** How long one attempt may run. The lease is this plus `leaseGraceSeconds`. Default 300. */
  timeoutSeconds?: number;
  /** Default priority of this type's jobs (lower runs first). Default 0. */
  priority?: number;
  /**
   * The job types this type's executor enqueues as follow-ups (a reminder sweep enqueuing notifications).
   * On AWS such an executor wakes fetch-ready after its run, so the follow-ups start at once instead of at
   * the next minute; the stack gives only these executors PutEvents on the jobs bus. Default none.
   */
  enqueues?: readonly string[];
  /**
   * How many of this type's jobs may run at once, across every fetch-ready run, executor and local worker:
   * kept by the type's slot rows (migration 0013; a claim takes free ones with SKIP LOCKED, never waiting).
   * On AWS it is also what the executor function's reserved concurrency is set to, where reservations are
   * on. Default: no limit (on AWS, the stack's `defaultTypeConcurrency`).
   */
  concurrency?: number;
  /**
   * At most `limit` of this type's jobs claimed in any `perSeconds` window, across every claimer (the
   * provider's quota: SES sends 14 a second by default). A job over the rate waits, due, with no attempt
   * counted. Default: no rate limit.
   */
  rateLimit?: RateLimit;
  /**
   * At most `limit` of this type's jobs with the same key run at once, across every claimer, while jobs
   * with other keys flow: the key is the payload's `field` (a string or an integer), stored with the job
   * at enqueue. A job whose key is at its limit waits, due, with no attempt counted. A payload without
   * the field has no key (make the field required in the schema if every job must have one). Default: none.
   */
  concurrencyKey?: ConcurrencyKey<PayloadField<z.output<Schema>>>;
}

/** A per-key concurrency limit: the payload field that holds the key, and how many per key run at once. */
export interface ConcurrencyKey<F extends string = string> {
  field: F;
  limit: number;
}

/** The top-level fields of a payload type (of any variant of a union). */
type PayloadField<P> = P extends unknown ? Extract<keyof P, string> : never;

/** The most jobs a per-key limit may allow, as for a type's concurrency. */
export const MAX_KEY_LIMIT = 10_000;
const KEY_FIELD = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/**
 * Checks a type's per-key limit at registration: the limit's range, and a field the payload schema has
 * (when it is an object, or a union of objects) that can hold a key (not an object, an array, a boolean...).
 * Read from the schema's structure, so the core needs no more of zod than the types do.
 */
function assertConcurrencyKey(type: string, key: ConcurrencyKey, schema: AnySchema): void {
  const what = `job type "${type}": concurrencyKey`;
  if (typeof key !== 'object' || key === null) throw new Error(`${what} must be { field, limit }`);
  if (typeof key.field !== 'string' || !KEY_FIELD.test(key.field))
    throw new Error(
      `${what}.field must name a top-level payload field (letters, digits, _; got ${String(key.field)})`,
    );
  if (!Number.isInteger(key.limit) || key.limit < 1 || key.limit > MAX_KEY_LIMIT)
    throw new Error(`${what}.limit must be an integer from 1 to ${MAX_KEY_LIMIT}`);
  const shapes = objectShapes(schema);
  if (shapes === undefined) return; // another kind of schema: the enqueue checks each value
  const fields = shapes.map((shape) => shape[key.field]).filter((f) => f !== undefined);
  if (fields.length === 0)
    throw new Error(`${what}.field "${key.field}" is not a field of its payload schema`);
  const unfit = fields.map(kindOf).filter((k): k is string => k !== undefined && UNFIT_KEY_KINDS.has(k));
  if (unfit.length > 0)
    throw new Error(
      `${what}.field "${key.field}" must hold a string or an integer (its schema says ${unfit.join(', ')})`,
    );
}

/** Schema kinds whose values are never a string or an integer. */
const UNFIT_KEY_KINDS = new Set(['object', 'array', 'tuple', 'record', 'map', 'set', 'boolean', 'date']);

interface SchemaNode {
  def?: { type?: string; innerType?: SchemaNode };
  shape?: Record<string, SchemaNode>;
  options?: SchemaNode[];
}

/** The fields of an object schema, or of each object of a union; undefined for any other schema. */
function objectShapes(schema: unknown): Record<string, SchemaNode>[] | undefined {
  const node = schema as SchemaNode;
  if (node.def?.type === 'object' && node.shape) return [node.shape];
  if (node.def?.type === 'union' && Array.isArray(node.options)) {
    const shapes = node.options.map((o) => (o.def?.type === 'object' ? o.shape : undefined));
    return shapes.every((x) => x !== undefined) ? shapes : undefined;
  }
  return undefined;
}

/** A field's kind, through optional, nullable and default wrappers. */
function kindOf(field: SchemaNode): string | undefined {
  let def = field.def;
  while (def && (def.type === 'optional' || def.type === 'nullable' || def.type === 'default'))
    def = def.innerType?.def;
  return def?.type;
}

/** A rate limit: at most `limit` claims in any window of `perSeconds`. */
export interface RateLimit {
  limit: number;
  perSeconds: number;
}

/** Checks a rate limit's range; the message names `what`. Used for a type's and for a stack's override. */
export function assertRateLimit(rate: RateLimit, what: string): void {
  if (!Number.isInteger(rate.limit) || rate.limit < 1 || rate.limit > 10_000)
    throw new Error(`${what}: rateLimit.limit must be an integer from 1 to 10000`);
  if (!Number.isInteger(rate.perSeconds) || rate.perSeconds < 1 || rate.perSeconds > 86_400)
    throw new Error(`${what}: rateLimit.perSeconds must be an integer from 1 to 86400`);
}

/** The variable the AWS functions read the stack's rate limits from (`rateLimitsFromText`). */
export const RATE_LIMITS_VARIABLE = 'JOBS_RATE_LIMITS';

/**
 * Rate limits as a setting writes them: `type=limit/perSeconds`, comma-separated (`notification=14/1`).
 * Throws naming the part that is wrong.
 */
export function rateLimitsFromText(text: string | undefined): Record<string, RateLimit> {
  const rates: Record<string, RateLimit> = {};
  for (const part of (text ?? '').split(',').map((p) => p.trim())) {
    if (part === '') continue;
    const m = /^([a-z0-9-]+)=(\d+)\/(\d+)$/.exec(part);
    if (!m) throw new Error(`rate limit "${part}" must read type=limit/perSeconds, e.g. notification=14/1`);
    const rate = { limit: Number(m[2]), perSeconds: Number(m[3]) };
    assertRateLimit(rate, `rate limit "${part}"`);
    rates[m[1]!] = rate;
  }
  return rates;
}

/** A job type with every setting resolved. */
export interface RegisteredJobType<S = unknown> {
  type: string;
  description: string;
  schema: AnySchema;
  execute: JobExecutor<unknown, S>;
  retry: RetrySettings;
  timeoutSeconds: number;
  leaseSeconds: number;
  priority: number;
  enqueues: readonly string[];
  /** Most jobs of this type running at once; undefined: no limit. */
  concurrency: number | undefined;
  /** Most of this type's jobs claimed in any window of `perSeconds`; undefined: no rate limit. */
  rateLimit: RateLimit | undefined;
  /** At most `limit` running at once per key (the payload's `field`); undefined: no per-key limit. */
  concurrencyKey: ConcurrencyKey | undefined;
}

/**
 * How long an AWS claim holds a job before its executor must have begun it: publishing, and a normal
 * asynchronous delivery to the executor function (whose maximum event age, 60 s, is Lambda's smallest and
 * lies inside it). The executor's start renews the lease to the run's; a claim that no executor began
 * within it is handed back uncounted.
 */
export const DISPATCH_LEASE_SECONDS = 90;

/**
 * On AWS, the concurrency limit of a job type that declares none (the stack's `defaultTypeConcurrency`,
 * read from this environment variable): without it one backlog could take the account's whole Lambda
 * concurrency (1,000 by default), the application's own functions included. 50 leaves room for six such
 * types and the rest of the account. Local workers have no default limit.
 */
export const DEFAULT_TYPE_CONCURRENCY = 50;
export const DEFAULT_TYPE_CONCURRENCY_ENV = 'LANA_DEFAULT_TYPE_CONCURRENCY';

/** Extra time beyond the timeout before a running job counts as lost: covers event delivery and reporting. */
export const LEASE_GRACE_SECONDS = 120;
export const DEFAULT_TIMEOUT_SECONDS = 300;

export function defineJobType<T extends string, Schema extends AnySchema, S>(
  def: JobTypeDefinition<T, Schema, S>,
): JobTypeDefinition<T, Schema, S> {
  return def;
}

/** Maps each registered job type's name to its payload schema, for typed `enqueue`. */
export type JobTypeMap = Record<string, AnySchema>;

export class JobTypeRegistry<M extends JobTypeMap = Record<never, never>, S = unknown> {
  /** Type-level only: the registered payload schemas by type name (lets `enqueue` check payloads). */
  declare readonly schemas: M;
  private readonly types = new Map<string, RegisteredJobType<S>>();

  register<T extends string, Schema extends AnySchema>(
    def: JobTypeDefinition<T, Schema, S>,
  ): JobTypeRegistry<M & Record<T, Schema>, S> {
    if (!/^[a-z][a-z0-9-]{0,62}$/.test(def.type)) {
      throw new Error(`job type name "${def.type}" must be lowercase letters, digits and dashes`);
    }
    if (this.types.has(def.type)) throw new Error(`job type "${def.type}" is registered twice`);
    const retry: RetrySettings = { ...DEFAULT_RETRY, ...def.retry };
    for (const key of Object.keys(RETRY_LIMITS) as (keyof RetrySettings)[]) {
      const { min, max } = RETRY_LIMITS[key];
      if (!Number.isInteger(retry[key]) || retry[key] < min || retry[key] > max) {
        throw new Error(`job type "${def.type}": retry.${key} must be an integer from ${min} to ${max}`);
      }
    }
    const priority = def.priority ?? 0;
    if (!Number.isInteger(priority) || priority < PRIORITY_RANGE.min || priority > PRIORITY_RANGE.max) {
      throw new Error(
        `job type "${def.type}": priority must be an integer from ${PRIORITY_RANGE.min} to ${PRIORITY_RANGE.max}`,
      );
    }
    const timeoutSeconds = def.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
    if (
      def.concurrency !== undefined &&
      (!Number.isInteger(def.concurrency) || def.concurrency < 1 || def.concurrency > 10_000)
    ) {
      throw new Error(`job type "${def.type}": concurrency must be an integer from 1 to 10000`);
    }
    if (def.rateLimit !== undefined) assertRateLimit(def.rateLimit, `job type "${def.type}"`);
    if (def.concurrencyKey !== undefined) assertConcurrencyKey(def.type, def.concurrencyKey, def.schema);
    this.types.set(def.type, {
      type: def.type,
      description: def.description,
      schema: def.schema,
      execute: def.execute as JobExecutor<unknown, S>,
      retry,
      timeoutSeconds,
      leaseSeconds: timeoutSeconds + LEASE_GRACE_SECONDS,
      priority,
      enqueues: [...(def.enqueues ?? [])],
      concurrency: def.concurrency,
      rateLimit: def.rateLimit ? { ...def.rateLimit } : undefined,
      concurrencyKey: def.concurrencyKey
        ? { field: def.concurrencyKey.field, limit: def.concurrencyKey.limit }
        : undefined,
    });
    this.limitsCache.clear();
    return this as unknown as JobTypeRegistry<M & Record<T, Schema>, S>;
  }

  get(type: string): RegisteredJobType<S> | undefined {
    return this.types.get(type);
  }

  /** The registered type, or a `JobInputError('unknown_job_type')` naming the known ones. */
  require(type: string): RegisteredJobType<S> {
    const found = this.types.get(type);
    if (!found) {
      throw new JobInputError(
        'unknown_job_type',
        `unknown job type "${truncate(type, 100)}" (known: ${[...this.types.keys()].join(', ')})`,
      );
    }
    return found;
  }

  list(): RegisteredJobType<S>[] {
    return [...this.types.values()];
  }

  private readonly limitsCache = new Map<number | undefined, string | null>();

  /**
   * The concurrency limits as the claim takes them (`{"type": max, ...}` as JSON), or null when no type
   * has one: the claim then needs no per-type accounting. `defaultLimit` applies to every type that
   * declares none (on AWS, the stack's cap on a type's executors).
   */
  concurrencyLimitsJson(defaultLimit?: number): string | null {
    let json = this.limitsCache.get(defaultLimit);
    if (json === undefined) {
      const limits: Record<string, number> = {};
      for (const t of this.types.values()) {
        const limit = t.concurrency ?? defaultLimit;
        if (limit !== undefined) limits[t.type] = limit;
      }
      json = Object.keys(limits).length > 0 ? JSON.stringify(limits) : null;
      this.limitsCache.set(defaultLimit, json);
    }
    return json;
  }

  /**
   * The rate limits as the claim takes them (`{"type": [limit, perSeconds], ...}` as JSON), or null when
   * no type has one. `overrides` (a stack's setting) replace a type's own limit, or give it one.
   */
  rateLimitsJson(overrides: Readonly<Record<string, RateLimit>> = {}): string | null {
    const rates: Record<string, [number, number]> = {};
    for (const t of this.types.values()) {
      const rate = overrides[t.type] ?? t.rateLimit;
      if (rate !== undefined) rates[t.type] = [rate.limit, rate.perSeconds];
    }
    return Object.keys(rates).length > 0 ? JSON.stringify(rates) : null;
  }

  /**
   * The per-key limits as the claim takes them (`{"type": limit, ...}` as JSON, under `$keys`), or null
   * when no type has one.
   */
  keyLimitsJson(): string | null {
    const keys: Record<string, number> = {};
    for (const t of this.types.values()) if (t.concurrencyKey) keys[t.type] = t.concurrencyKey.limit;
    return Object.keys(keys).length > 0 ? JSON.stringify(keys) : null;
  }

  /** Validates a payload against its type's schema; the error names each failing field. */
  parsePayload(type: string, payload: unknown): unknown {
    const jobType = this.require(type);
    const result = jobType.schema.safeParse(payload);
    if (!result.success) {
      const problems = result.error.issues
        .map((issue) => `${['payload', ...issue.path.map(String)].join('.')}: ${issue.message}`)
        .join('; ');
      throw new JobInputError('invalid_payload', `invalid payload for ${type}: ${problems}`);
    }
    return result.data;
  }
}

/** A queryable to run in, for transactional enqueue: the caller's open transaction. */
export interface InTransaction {
  db?: Queryable;
}

export function truncate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}
