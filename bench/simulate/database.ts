import type { Database, Queryable, QueryResult, Row, SqlParams, SqlValue } from '../../shared/db/port.js';
import { assertAlive } from './lambda.js';
import type { VirtualTime } from './virtual-time.js';

/**
 * Aurora Serverless v2 as the simulator charges it. An ACU is "about 2 GiB of memory with corresponding
 * CPU" (Aurora User Guide); Aurora's memory-optimized classes (db.r6g/r7g, the family Serverless v2
 * capacity is sized against) have 8 GiB per vCPU, so 4 ACU make one vCPU: the stack's default maximum
 * (4 ACU) is one vCPU, its minimum (0.5 ACU) an eighth of one.
 */
export const VCPUS_PER_ACU = 0.25;

export interface DatabaseModelOptions {
  /** `charged`: latency drawn with a tail, and statements cost their measured time; `legacy`: issue 15's model. */
  model: 'charged' | 'legacy';
  /** The Data API's latency: the median of the drawn distribution (charged), or the constant (legacy). */
  latencyMs: number;
  /** The spread of the log-normal latency: 0.5 puts p99 at 3.2 × the median. */
  latencySigma?: number;
  /** Aurora capacity in ACU. */
  acu: number;
  /** One vCPU of Aurora against one core of the machine that measures the statements. Default 1. */
  vcpuVsLocalCore?: number;
  /**
   * Aurora's commit: a write is durable once 4 of its 6 copies (in 3 AZs) acknowledge it. It holds the
   * statement's locks, not a vCPU. Default 2 ms.
   */
  commitMs?: number;
  /** Share of calls answered with a 5xx, which the SDK sends again (half before running, half after). */
  serverErrorRate?: number;
  random: () => number;
}

/** A FIFO of holders of a resource with `capacity` places. */
class Resource {
  private held = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly capacity: number) {}

  async acquire(): Promise<void> {
    if (this.held < this.capacity) {
      this.held++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.held--;
  }
}

/** Real statements one at a time, so each one's measured time is its own and not a neighbour's. */
class RealLane {
  private tail: Promise<unknown> = Promise.resolve();
  /** The running statement's time: its server process's CPU time where known, else its wall time. */
  lastMs = 0;

  /** For the fixture's `onStatement`. */
  readonly record = (wallMs: number, cpuMs: number | undefined) => {
    this.lastMs += cpuMs ?? wallMs;
  };

  run<T>(work: () => Promise<T>): Promise<T> {
    const next = this.tail.then(
      () => {
        this.lastMs = 0;
        return work();
      },
      () => {
        this.lastMs = 0;
        return work();
      },
    );
    this.tail = next.catch(() => {});
    return next;
  }
}

const percentile = (sorted: number[], p: number) =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;

/**
 * The database behind the Data API, in virtual time: every call pays a drawn latency (half each way),
 * waits for the locks its statement takes (the previous release's limited claim,
 * `lana_jobs_claim_limited`, held its job types' claim locks; today's slot claim takes free slot rows with
 * SKIP LOCKED and waits for none), then for one of the instance's vCPUs, and holds it for the statement's
 * cost: its execution on the real PostgreSQL, measured as it runs, scaled to the capacity. The cost of a
 * statement is the median of the last measurements of its shape (its text and how many rows it
 * answered), so one slow measurement on a noisy machine moves nothing by itself.
 */
export class DatabaseModel {
  /** Virtual milliseconds the instance's vCPUs spent on statements. */
  dbMs = 0;
  readonly lockWaits: number[] = [];
  statements = 0;
  /** Calls answered with a 5xx that the SDK sent again. */
  resends = 0;
  /** Slot claims. */
  claims = 0;
  /**
   * Slot claims that ran while another write of the same type (or of unknown or every type) was
   * committing: on PostgreSQL the rows that write changed (a slot it freed or took, a job it released) stay
   * locked until its commit and the claim skips them (SKIP LOCKED), where the model, whose statements are
   * measured one at a time, shows it them committed.
   */
  claimsDuringAnothersCommit = 0;
  private readonly committing = new Map<string, number>();
  readonly lane = new RealLane();
  private readonly cpus: Resource;
  private readonly speed: number;
  private readonly locks = new Map<string, Resource>();
  private readonly samples = new Map<string, number[]>();
  private readonly totals = new Map<string, { count: number; ms: number }>();

  constructor(
    private readonly vt: VirtualTime,
    readonly options: DatabaseModelOptions,
  ) {
    const vcpus = options.acu * VCPUS_PER_ACU * (options.vcpuVsLocalCore ?? 1);
    // Whole vCPUs serve one statement each; below one, a single server runs at that fraction of a core.
    const servers = Math.max(1, Math.floor(vcpus));
    this.cpus = new Resource(servers);
    this.speed = vcpus / servers;
  }

  /** The instance's vCPUs (as the model counts them). */
  get vcpus(): number {
    return this.options.acu * VCPUS_PER_ACU;
  }

  drawLatency(): number {
    if (this.options.model === 'legacy') return this.options.latencyMs;
    // Log-normal around the median (Box-Muller on the seeded draws).
    const u1 = Math.max(1e-12, this.options.random());
    const u2 = this.options.random();
    const z = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
    return this.options.latencyMs * Math.exp((this.options.latencySigma ?? 0.5) * z);
  }

  /** Runs one statement through the model: `real` sends it (through the Data API driver and fixture). */
  async call<R extends Row>(
    sql: string,
    params: SqlParams | undefined,
    real: () => Promise<QueryResult<R>>,
    onResend?: () => void,
  ): Promise<QueryResult<R>> {
    assertAlive();
    if (this.options.model === 'legacy') {
      await this.vt.sleep(this.options.latencyMs);
      return this.vt.real(real);
    }
    const rate = this.options.serverErrorRate ?? 0;
    const fault = rate > 0 ? this.options.random() : 1;
    if (fault < rate / 2) {
      // A 5xx before running: the SDK's standard retry sends it again after a short backoff.
      this.resends++;
      onResend?.();
      await this.vt.sleep(this.drawLatency() + 50 + 50 * this.options.random());
    }
    const latency = this.drawLatency();
    await this.vt.sleep(latency / 2);
    let result = await this.execute(sql, params, real);
    if (fault >= rate / 2 && fault < rate) {
      // It ran (and committed), but its answer was lost to a 5xx: the SDK sends the same request again.
      this.resends++;
      onResend?.();
      await this.vt.sleep(latency / 2 + 50 + 50 * this.options.random());
      assertAlive();
      result = await this.execute(sql, params, real);
    }
    await this.vt.sleep(latency / 2);
    assertAlive();
    return result;
  }

  private async execute<R extends Row>(
    sql: string,
    params: SqlParams | undefined,
    real: () => Promise<QueryResult<R>>,
  ): Promise<QueryResult<R>> {
    const keys = claimLockKeys(sql, params);
    const waitFrom = this.vt.now;
    const locks = keys.map((k) => {
      const lock = this.locks.get(k) ?? new Resource(1);
      this.locks.set(k, lock);
      return lock;
    });
    // Taken in key order, as the claim takes them: no claimer waits on another in a cycle.
    for (const lock of locks) await lock.acquire();
    if (keys.length > 0) this.lockWaits.push(this.vt.now - waitFrom);
    await this.cpus.acquire();
    let cpuHeld = true;
    const writeKey = typeKey(params);
    if (sql.includes('lana_jobs_claim_slotted(')) {
      this.claims++;
      const meets = [...this.committing].some(
        ([k, n]) => n > 0 && (k === writeKey || k === ALL_TYPES || writeKey === ALL_TYPES),
      );
      if (meets) this.claimsDuringAnothersCommit++;
    }
    try {
      let measured = 0;
      const result = await this.vt.real(() =>
        this.lane.run(async () => {
          const r = await real();
          measured = this.lane.lastMs;
          return r;
        }),
      );
      this.statements++;
      const rows = result.rows.length || (result.rowCount ?? 0);
      const shape = `${rowsBucket(rows)}|${sql}`;
      const cost = this.charge(shape, measured) / this.speed;
      this.dbMs += cost;
      const total = this.totals.get(shape) ?? { count: 0, ms: 0 };
      total.count++;
      total.ms += cost;
      this.totals.set(shape, total);
      await this.vt.sleep(cost);
      this.cpus.release();
      cpuHeld = false;
      // The commit's flush to storage: the statement keeps its locks (a claim's advisory lock ends with
      // its transaction), the vCPU is free.
      if (WRITES.test(sql)) {
        this.committing.set(writeKey, (this.committing.get(writeKey) ?? 0) + 1);
        try {
          await this.vt.sleep(this.options.commitMs ?? 2);
        } finally {
          this.committing.set(writeKey, this.committing.get(writeKey)! - 1);
        }
      }
      return result;
    } finally {
      if (cpuHeld) this.cpus.release();
      for (const lock of locks) lock.release();
    }
  }

  /** The median of the shape's last 15 measurements, in 0.05 ms steps. */
  private charge(shape: string, measured: number, record = true): number {
    const list = this.samples.get(shape) ?? [];
    if (record) list.push(measured);
    if (list.length > 15) list.shift();
    this.samples.set(shape, list);
    const median = [...list].sort((a, b) => a - b)[list.length >> 1]!;
    return Math.round(median * 20) / 20;
  }

  /** The statements that cost most in all, with their count and charged median (first 60 characters). */
  costliest(n = 8): { sql: string; rows: number; count: number; medianMs: number; totalMs: number }[] {
    return [...this.totals.entries()]
      .map(([shape, t]) => {
        const [rows, ...sql] = shape.split('|');
        return {
          sql: sql.join('|').replace(/\s+/g, ' ').trim().slice(0, 60),
          rows: Number(rows),
          count: t.count,
          medianMs: this.charge(shape, Number.NaN, false),
          totalMs: Math.round(t.ms),
        };
      })
      .sort((a, b) => b.totalMs - a.totalMs)
      .slice(0, n);
  }

  lockWaitP99Ms(): number {
    return percentile(
      [...this.lockWaits].sort((a, b) => a - b),
      0.99,
    );
  }
}

const ALL_TYPES = '*';

/** The job type a statement works on (its :only_type or :job_type), `*` when it names none. */
export function typeKey(params: SqlParams | undefined): string {
  return text(params?.only_type) ?? text(params?.job_type) ?? ALL_TYPES;
}

/** Statements that write (a claim writes inside `lana_jobs_claim_slotted` or `lana_jobs_claim_limited`). */
const WRITES = /\b(INSERT|UPDATE|DELETE|lana_jobs_claim_slotted|lana_jobs_claim_limited)\b/i;

function rowsBucket(rows: number): number {
  return rows === 0 ? 0 : Math.ceil(Math.log2(rows + 1));
}

function text(v: SqlValue | undefined): string | null {
  if (v === null || v === undefined) return null;
  if (typeof v === 'object' && 'sqlType' in v) return v.text;
  return String(v);
}

/**
 * The claim locks a statement takes: a limited claim (`lana_jobs_claim_limited`) takes each limited type's
 * lock it claims for (only :only_type, or every type named in :limits).
 */
export function claimLockKeys(sql: string, params: SqlParams | undefined): string[] {
  if (!sql.includes('lana_jobs_claim_limited(') || !params) return [];
  const only = text(params.only_type);
  if (only) return [only];
  const limits = text(params.limits);
  if (!limits) return [];
  try {
    return Object.keys(JSON.parse(limits) as Record<string, unknown>).sort();
  } catch {
    return [];
  }
}

/** The database port through the model, counted (each send, resends included, is a billed request). */
export class SimDatabase implements Database {
  calls = 0;
  readonly driverName: Database['driverName'];
  readonly maxRowBytes: number | undefined;
  readonly maxRequestBytes: number | undefined;
  readonly resendsStatements: boolean | undefined;

  constructor(
    private readonly inner: Database,
    private readonly model: DatabaseModel,
  ) {
    this.driverName = inner.driverName;
    this.maxRowBytes = inner.maxRowBytes;
    this.maxRequestBytes = inner.maxRequestBytes;
    this.resendsStatements = inner.resendsStatements;
  }

  query<R extends Row = Row>(sql: string, params?: SqlParams) {
    this.calls++;
    return this.model.call(sql, params, () => this.inner.query<R>(sql, params), this.resent);
  }

  transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T> {
    return this.inner.transaction((tx) =>
      work({
        query: <R extends Row = Row>(sql: string, params?: SqlParams) => {
          this.calls++;
          return this.model.call(sql, params, () => tx.query<R>(sql, params), this.resent);
        },
      }),
    );
  }

  close() {
    return this.inner.close();
  }

  private readonly resent = () => {
    this.calls++;
  };
}
