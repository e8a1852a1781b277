import type { Database, SqlParams } from '../db/port.js';
import type { Clock } from './clock.js';
import type { DriverLimits } from './driver-limits.js';
import type { JobMetrics } from './metrics.js';
import type { JobTypeMap, JobTypeRegistry, RateLimit } from './registry.js';

/** What the tracker's parts (enqueue, attempts, operator queries) share. */
export interface TrackerDeps<M extends JobTypeMap, S> {
  db: Database;
  registry: JobTypeRegistry<M, S>;
  clock: Clock;
  metrics: JobMetrics;
  limits: DriverLimits;
  /** The concurrency limit of every type that declares none (the AWS stack's cap); undefined: none. */
  defaultConcurrency?: number;
  /** Rate limits replacing the types' own (the AWS stack's setting, e.g. the account's SES quota). */
  rateLimitOverrides?: Readonly<Record<string, RateLimit>>;
}

/** A part of the tracker: its dependencies, and the clock every statement's `:now` comes from. */
export abstract class TrackerPart<M extends JobTypeMap, S> {
  readonly db: Database;
  readonly registry: JobTypeRegistry<M, S>;
  readonly clock: Clock;
  readonly metrics: JobMetrics;
  protected readonly limits: DriverLimits;
  private readonly defaultConcurrency: number | undefined;
  protected readonly rateLimitOverrides: Readonly<Record<string, RateLimit>>;
  private claimLimitsCache: string | null | undefined;

  constructor(deps: TrackerDeps<M, S>) {
    this.defaultConcurrency = deps.defaultConcurrency;
    this.rateLimitOverrides = deps.rateLimitOverrides ?? {};
    this.db = deps.db;
    this.registry = deps.registry;
    this.clock = deps.clock;
    this.metrics = deps.metrics;
    this.limits = deps.limits;
  }

  /** The claims' concurrency limits (`{"type": max}` as JSON), or null when no type has one. */
  protected concurrencyLimits(): string | null {
    return this.registry.concurrencyLimitsJson(this.defaultConcurrency);
  }

  /** The claims' rate limits (`{"type": [limit, perSeconds]}` as JSON), or null when no type has one. */
  protected rateLimits(): string | null {
    return this.registry.rateLimitsJson(this.rateLimitOverrides);
  }

  /**
   * What the limited claim takes as :limits: the concurrency limits, with the rate limits under `$rates`
   * and the per-key limits under `$keys` (no job type can be named so); null when there are none of them.
   */
  protected claimLimits(): string | null {
    if (this.claimLimitsCache === undefined) {
      const limits = this.concurrencyLimits();
      const rates = this.rateLimits();
      const keys = this.registry.keyLimitsJson();
      this.claimLimitsCache =
        rates === null && keys === null
          ? limits
          : JSON.stringify({
              ...(limits === null ? {} : JSON.parse(limits)),
              ...(rates === null ? {} : { $rates: JSON.parse(rates) }),
              ...(keys === null ? {} : { $keys: JSON.parse(keys) }),
            });
    }
    return this.claimLimitsCache;
  }

  /** Statement parameters with `:now` (NULL: the database's clock). */
  protected params(extra: SqlParams): SqlParams {
    return { now: this.clock.now(), ...extra };
  }
}
