import type { Database, SqlParams } from '../db/port.js';
import type { Clock } from './clock.js';
import type { DriverLimits } from './driver-limits.js';
import type { JobMetrics } from './metrics.js';
import type { JobTypeMap, JobTypeRegistry } from './registry.js';

/** What the tracker's parts (enqueue, attempts, operator queries) share. */
export interface TrackerDeps<M extends JobTypeMap, S> {
  db: Database;
  registry: JobTypeRegistry<M, S>;
  clock: Clock;
  metrics: JobMetrics;
  limits: DriverLimits;
}

/** A part of the tracker: its dependencies, and the clock every statement's `:now` comes from. */
export abstract class TrackerPart<M extends JobTypeMap, S> {
  readonly db: Database;
  readonly registry: JobTypeRegistry<M, S>;
  readonly clock: Clock;
  readonly metrics: JobMetrics;
  protected readonly limits: DriverLimits;

  constructor(deps: TrackerDeps<M, S>) {
    this.db = deps.db;
    this.registry = deps.registry;
    this.clock = deps.clock;
    this.metrics = deps.metrics;
    this.limits = deps.limits;
  }

  /** Statement parameters with `:now` (NULL: the database's clock). */
  protected params(extra: SqlParams): SqlParams {
    return { now: this.clock.now(), ...extra };
  }
}
