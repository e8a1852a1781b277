import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { z } from 'zod';
import { AwsExecutor, type ExecutorLog } from '../../shared/aws/executor.js';
import { fanOutDueJobs, type JobPublisher } from '../../shared/aws/fetch-ready.js';
import { migrate } from '../../shared/db/migrate.js';
import { PgDatabase } from '../../shared/db/pg-driver.js';
import type { Database, Queryable, QueryResult, Row, SqlParams, TypedValue } from '../../shared/db/port.js';
import {
  createApprovalProcess,
  createApprovalService,
  createCommittee,
  recordVote,
  setApprovalPolicy,
} from '../../shared/domain/approvals.js';
import { createCreditService } from '../../shared/domain/credit.js';
import { createNotificationService } from '../../shared/domain/notifications.js';
import type { Notifier } from '../../shared/domain/notifier.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { PermanentJobError } from '../../shared/jobs/errors.js';
import { type JobContext, JobTypeRegistry } from '../../shared/jobs/registry.js';
import { backoffSeconds } from '../../shared/jobs/retry-policy.js';
import { completeAndClaimBehindSql } from '../../shared/jobs/sql/behind.js';
import { claimWithinHoldsSql } from '../../shared/jobs/sql/claim.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { Worker } from '../../shared/runtime/worker.js';
import { type DataApiFixture, dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { prng } from '../support/prng.js';

/**
 * The fault-injection run: real trackers, dispatchers and workers, and the AWS runtime's own fetch-ready
 * and executor loops (shared/aws, as the deployed functions run them) over the RDS Data API fixture, on a
 * real PostgreSQL, with faults injected at random from a printed seed, then invariants checked on what
 * the tables and the executors recorded.
 */
export interface ChaosOptions {
  adminUrl: string;
  seed: number;
  jobs: number;
  /** Local workers (each its own connection pool). */
  workers: number;
  /** Simulated fetch-ready + executor Lambdas (each its own pool). */
  lambdas: number;
  /** How long faults are injected before the system is left to settle. */
  faultSeconds: number;
  log?: (line: string) => void;
}

export interface ChaosReport {
  jobs: number;
  seed: number;
  seconds: number;
  faults: Record<string, number>;
  outcomes: Record<string, number>;
  /** Why jobs ended `failed` (top reasons). */
  failureReasons: Record<string, number>;
  violations: Record<string, number>;
  /** Effects an executor performed again for a job (absorbed by the idempotent effect table). */
  effectsRerun: number;
  /**
   * Reminders delivered twice: a connection killed after the provider accepted the message and before the
   * outbox row was marked sent. No outbox closes that gap for a provider without idempotency keys.
   */
  remindersResentAfterCrash: number;
  /** Attempts that overlapped in real time only because an injected clock jump expired a live lease. */
  overlapsCausedByClockJumps: number;
  /** Runs of one key beyond its limit only because an injected clock jump expired a live lease. */
  keyOverrunsCausedByClockJumps: number;
  /** Runs of a type beyond its concurrency limit only because an injected clock jump lapsed live slot holds. */
  typeOverrunsCausedByClockJumps: number;
  /** Jobs of the type limited by its concurrency alone (`chaos-limited`), besides `jobs`. */
  limitedJobs: number;
  /** How often the paths only such a type takes ran in the workers and Lambdas under the faults. */
  limitedPaths: LimitedPaths;
  /** The same, in the settling workers (no faults but the executors' own and the clock's jumps). */
  settlerPaths: LimitedPaths;
  /** Attempts the AWS path's executor loop ran (delivered, or taken as its type's next job). */
  executorRuns: number;
  /** Jobs enqueued by executors (a worker's follow-ups take its eager start when it has a free slot). */
  followUps: number;
  /** Of those, the ones a worker started eagerly (inserted already claimed). */
  followUpsStartedEagerly: number;
}

export { prng } from '../support/prng.js';

/** Deterministic per (seed, job, attempt): replaying a seed replays each attempt's behaviour. */
function behaviourOf(seed: number, jobId: string, attempt: number) {
  let h = seed ^ (attempt * 0x9e3779b1);
  for (const c of jobId) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193);
  const r = prng(h)();
  if (r < 0.55) return 'ok' as const;
  if (r < 0.7) return 'throw' as const;
  if (r < 0.74) return 'permanent' as const;
  if (r < 0.8) return 'hang' as const;
  if (r < 0.86) return 'crash-after-work' as const;
  return 'slow' as const;
}

const CHAOS_RETRY = { maxAttempts: 6, backoffBaseSeconds: 1, backoffCapSeconds: 32 };
/** The chaos type's concurrency limit: below what the workers and executors could run together, so it binds. */
const CHAOS_CONCURRENCY = 6;
/** Its per-key limit: jobs with a `lane` run one per lane at once (three lanes: it binds), as approvals per facility. */
const CHAOS_KEY_LIMIT = 1;
const CHAOS_LANES = 3;
/**
 * The second chaos type: a concurrency limit and nothing else (no key, no rate), as most shipped types. Only
 * such a type takes a local worker's claim within the slots it holds (`claimWithinHoldsSql`) and, on AWS,
 * has its next job held behind the running one (`shared/jobs/sql/behind.ts`). Its limit is below what the
 * workers or the executors alone could run, so it binds.
 */
const LIMITED_TYPE = 'chaos-limited';
const LIMITED_CONCURRENCY = 3;
/** The limited type's jobs are numbered from here. */
const LIMITED_BASE = 2_000_000;
const CHAOS_TYPE = 'chaos-effect';

export interface Run {
  jobId: string;
  /** The job's type (the per-type limit is checked per type). */
  type?: string;
  attempt: number;
  start: number;
  end: number;
  /** The attempt's lease expiry on the database's (injected) clock; its claim was one lease length before. */
  leaseExpiresAt: number;
  /** The job's concurrency key (its lane), if it has one. */
  key?: string;
  /** When the attempt was claimed, on the database's clock (read from its execution row after the run). */
  claimedAt?: number;
  /** The database's (injected) clock as the run began. */
  startedOnDbClock?: number;
  /** A local worker's run: when the worker's hold on its slots of the type expired, read as the run began. */
  holdExpiresAt?: number;
}

/**
 * Real-time overlaps of two attempts of one job. Each is a violation unless the later attempt (by number,
 * that is by claim) was claimed after the earlier one's lease had expired on the database's clock. Leases
 * last minutes and runs seconds, so only an injected clock jump expires one: the documented limit (a jump
 * past a live lease). The jump may come before the earlier attempt even started: it waited in a worker's
 * queue or on the bus meanwhile, and may then start after the later attempt did (a worker judges a queued
 * job's lease on its own monotonic clock, which the injected jump does not move).
 */
export function classifyOverlaps(
  runs: readonly Run[],
  leaseMs: number,
): { overlapping: { prev: Run; cur: Run }[]; overlapsCausedByClockJumps: number } {
  let overlapsCausedByClockJumps = 0;
  const overlapping: { prev: Run; cur: Run }[] = [];
  const byJob = new Map<string, Run[]>();
  for (const r of runs) byJob.set(r.jobId, [...(byJob.get(r.jobId) ?? []), r]);
  for (const list of byJob.values()) {
    for (let i = 0; i < list.length; i++) {
      for (let k = i + 1; k < list.length; k++) {
        const [prev, cur] = [list[i]!, list[k]!].sort((a, b) => a.attempt - b.attempt) as [Run, Run];
        if (prev.attempt === cur.attempt || prev.start >= cur.end || cur.start >= prev.end) continue;
        // The later attempt's claim time: its lease was set one lease length after it.
        if (cur.leaseExpiresAt - leaseMs >= prev.leaseExpiresAt) overlapsCausedByClockJumps++;
        else overlapping.push({ prev, cur });
      }
    }
  }
  return { overlapping, overlapsCausedByClockJumps };
}

/**
 * Runs of one key beyond its limit: at a run's start, `limit` or more runs of other jobs with its key were
 * under way. A violation unless some of them had lost their lease (on the database's clock) before this
 * run was claimed, which only an injected clock jump does (as for `classifyOverlaps`): a claim counts a
 * key's running jobs whose leases are live.
 */
export function classifyKeyOverruns(
  runs: readonly Run[],
  leaseMs: number,
  limit: number,
): { overruns: { cur: Run; live: Run[] }[]; overrunsCausedByClockJumps: number } {
  let overrunsCausedByClockJumps = 0;
  const overruns: { cur: Run; live: Run[] }[] = [];
  const byKey = new Map<string, Run[]>();
  for (const r of runs) if (r.key !== undefined) byKey.set(r.key, [...(byKey.get(r.key) ?? []), r]);
  // An executor's next job holds a shorter dispatch lease: its claim time is read, not derived, if known.
  const claimedAt = (r: Run) => r.claimedAt ?? r.leaseExpiresAt - leaseMs;
  for (const list of byKey.values()) {
    for (const cur of list) {
      const live = list.filter((r) => r.jobId !== cur.jobId && r.start <= cur.start && cur.start < r.end);
      if (live.length < limit) continue;
      // Judged by claim order, not start: a job claimed first can start later (it waited in a worker's queue
      // while a jump expired its lease, and the later claim no longer counted it), as for overlaps.
      const held = live.filter((r) =>
        claimedAt(r) <= claimedAt(cur)
          ? claimedAt(cur) < r.leaseExpiresAt
          : claimedAt(r) < cur.leaseExpiresAt,
      );
      if (held.length >= limit) overruns.push({ cur, live: held });
      else overrunsCausedByClockJumps++;
    }
  }
  return { overruns, overrunsCausedByClockJumps };
}

/**
 * Runs of one type beyond its concurrency limit: at a run's start, `limit` or more runs of the type's other
 * jobs were under way, each on a slot hold still live on the database's clock at that moment (as was the
 * run's own). A hold is a lease: the job's (fetch-ready, executors: `holdExpiresAt` absent) or the local
 * worker's on its slots (`holdExpiresAt`, read as the run began; renewals only move it later). A hold lapses
 * under a live run only when an injected jump moves the clock past it, and a claim may then take its slot:
 * such runs are put down to the jump.
 */
export function classifyTypeOverruns(
  runs: readonly Run[],
  type: string,
  limit: number,
): { overruns: { cur: Run; live: Run[] }[]; overrunsCausedByClockJumps: number } {
  let overrunsCausedByClockJumps = 0;
  const overruns: { cur: Run; live: Run[] }[] = [];
  const list = runs.filter((r) => r.type === type);
  const holdEnds = (r: Run) => r.holdExpiresAt ?? r.leaseExpiresAt;
  for (const cur of list) {
    const live = list.filter((r) => r.jobId !== cur.jobId && r.start <= cur.start && cur.start < r.end);
    if (live.length < limit) continue;
    const now = cur.startedOnDbClock ?? Number.NEGATIVE_INFINITY;
    const held = holdEnds(cur) > now ? live.filter((r) => holdEnds(r) > now) : [];
    if (held.length >= limit) overruns.push({ cur, live: held });
    else overrunsCausedByClockJumps++;
  }
  return { overruns, overrunsCausedByClockJumps };
}

const chaosSchema = z.object({
  n: z.number().int(),
  accrualDay: z.string().optional(),
  processId: z.string().optional(),
  remindFacility: z.string().optional(),
  followUp: z.boolean().optional(),
  lane: z.string().optional(),
});
type ChaosPayload = z.infer<typeof chaosSchema>;

interface ChaosServices {
  /** The database of the process the attempt runs in: a worker's pool, or a Lambda's Data API client. */
  db: Database;
  /** Kills the process the attempt runs in, after its work: the result is never reported. */
  crash: () => void;
  /** Enqueues job `n`'s follow-up through the tracker of the process the attempt runs in. */
  enqueueFollowUp: (n: number) => Promise<void>;
  /** A local worker's id: the holder of its slots (a Lambda's jobs hold their slots themselves). */
  slotHolder?: string;
}

/**
 * How often the paths only a type with a concurrency limit alone takes ran, read from the answers of their
 * statements in the workers and Lambdas that run under the faults (the test holds a floor on the claims
 * within holds and the jobs claimed behind, so a change that stops taking them fails it rather than passing
 * untested).
 */
export interface LimitedPaths {
  /** Local workers' claims made within the slots they hold (`claimWithinHoldsSql` applied, jobs claimed). */
  claimsWithinHolds: number;
  /** Jobs those claims took. */
  jobsClaimedWithinHolds: number;
  /** Jobs an executor claimed behind its running job (`completeAndClaimBehindSql`). */
  jobsClaimedBehind: number;
  /** Statements completing a job with one held behind it, to pass its slot on (the executor's `handOn`). */
  handOns: number;
  /** Jobs behind that such a statement began, passing them the slot (the others were given back). */
  jobsBegunBehind: number;
}

/** `db`, with `seen` told of each statement and its answer (in a transaction too). */
function observeStatements(
  db: Database,
  seen: (sql: string, params: SqlParams | undefined, rows: readonly Row[]) => void,
): Database {
  const observed = (q: Queryable): Queryable => ({
    async query<R extends Row = Row>(sql: string, params?: SqlParams): Promise<QueryResult<R>> {
      const result = await q.query<R>(sql, params);
      seen(sql, params, result.rows);
      return result;
    },
  });
  const { driverName, maxRowBytes, maxRequestBytes, resendsStatements } = db;
  return {
    ...observed(db),
    transaction: (work) => db.transaction((tx) => work(observed(tx))),
    close: () => db.close(),
    driverName,
    ...(maxRowBytes === undefined ? {} : { maxRowBytes }),
    ...(maxRequestBytes === undefined ? {} : { maxRequestBytes }),
    ...(resendsStatements === undefined ? {} : { resendsStatements }),
    ...(db.warmSessionsWith ? { warmSessionsWith: (sql: string) => db.warmSessionsWith?.(sql) } : {}),
  };
}

/** Counts into `paths` what the within-holds claims and the claims behind did. */
const countLimitedPaths =
  (paths: LimitedPaths) => (sql: string, params: SqlParams | undefined, rows: readonly Row[]) => {
    if (sql === claimWithinHoldsSql) {
      const row = rows[0];
      if (row?.applies !== true) return;
      const jobs = (JSON.parse(String(row.jobs)) as unknown[]).length;
      if (jobs > 0) paths.claimsWithinHolds++;
      paths.jobsClaimedWithinHolds += jobs;
    } else if (sql === completeAndClaimBehindSql) {
      paths.jobsClaimedBehind += rows.filter((r) => r.role === 'behind').length;
      const behindId = (params?.behind_id as TypedValue | null | undefined)?.text;
      if (behindId) paths.handOns++;
      if (behindId && rows.some((r) => r.role === 'next' && r.id === behindId)) paths.jobsBegunBehind++;
    }
  };

/** The executors' log: the harness reads what they did from the tables. */
const silentExecutorLog: ExecutorLog = { info() {}, warn() {}, error() {}, appendKeys() {} };

/** Follow-up jobs are numbered from here; their idempotency key names the parent, so reruns add none. */
const FOLLOW_UP_BASE = 1_000_000;
const followUpEnqueuer = (tracker: Pick<JobTracker, 'enqueueUntyped'>) => async (n: number) => {
  await tracker.enqueueUntyped([
    { type: 'chaos-effect', payload: { n: FOLLOW_UP_BASE + n }, idempotencyKey: `follow-up-of-${n}` },
  ]);
};

export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const log = options.log ?? (() => {});
  const t0 = performance.now();
  const rand = prng(options.seed);
  const name = `lana_chaos_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: options.adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const url = new URL(options.adminUrl);
  url.pathname = `/${name}`;
  const dbUrl = url.toString();
  const faults: Record<string, number> = {};
  const fault = (kind: string) => {
    faults[kind] = (faults[kind] ?? 0) + 1;
  };
  const runs: Run[] = [];
  const limitedPaths: LimitedPaths = {
    claimsWithinHolds: 0,
    jobsClaimedWithinHolds: 0,
    jobsClaimedBehind: 0,
    handOns: 0,
    jobsBegunBehind: 0,
  };
  const countPaths = countLimitedPaths(limitedPaths);
  const settlerPaths: LimitedPaths = {
    claimsWithinHolds: 0,
    jobsClaimedWithinHolds: 0,
    jobsClaimedBehind: 0,
    handOns: 0,
    jobsBegunBehind: 0,
  };
  const countSettlerPaths = countLimitedPaths(settlerPaths);
  let executorRuns = 0;
  // Reminders delivered, by outbox key, across every simulated process.
  const sends = new Map<string, number>();
  const countingNotifier: Notifier = {
    async send(message) {
      sends.set(message.idempotencyKey, (sends.get(message.idempotencyKey) ?? 0) + 1);
      return { messageId: `m-${sends.size}` };
    },
  };
  // Real time plus an offset that the injected jumps increase: leases and timeouts keep their real-time
  // relationship except across a jump, which is the fault being injected.
  let offsetMs = 0;
  const clock = { now: () => new Date(Date.now() + offsetMs) };
  const pools: PgDatabase[] = [];
  const fixtures: DataApiFixture[] = [];
  const pool = (label: string) => {
    const p = new PgDatabase({ connectionString: dbUrl, max: 4, applicationName: `chaos-${label}` });
    pools.push(p);
    return p;
  };
  const control = pool('control');
  // The harness's own readings during the run, beside the control pool's work.
  const holds = pool('control');
  try {
    await migrate(control);
    // The domain effect, made idempotent the way a real executor must be: one row per job, whatever runs.
    await control.query('CREATE TABLE chaos_effects (job_id uuid PRIMARY KEY, attempt integer NOT NULL)');
    // Every time an executor performed the effect, absorbed or not.
    await control.query('CREATE TABLE chaos_effect_runs (job_id uuid NOT NULL, attempt integer NOT NULL)');
    // Every claim or eager start, stamped with the time its statement reached the server (for the pause
    // invariant): a statement that arrived after a pause committed takes its snapshot after it too, so it
    // sees the pause, whatever the client's clock said or how long the statement waited to be sent.
    await control.query(
      'CREATE TABLE chaos_claims (job_id uuid NOT NULL, job_type text NOT NULL, attempt integer NOT NULL, at timestamptz NOT NULL)',
    );
    await control.query(`
      CREATE FUNCTION chaos_log_claim() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        INSERT INTO chaos_claims VALUES (NEW.id, NEW.job_type, NEW.attempts, statement_timestamp());
        RETURN NULL;
      END $$`);
    await control.query(`
      CREATE TRIGGER chaos_log_claim AFTER UPDATE ON jobs FOR EACH ROW
      WHEN (NEW.status = 'running' AND OLD.status <> 'running') EXECUTE FUNCTION chaos_log_claim()`);
    await control.query(`
      CREATE TRIGGER chaos_log_eager_start AFTER INSERT ON jobs FOR EACH ROW
      WHEN (NEW.status = 'running') EXECUTE FUNCTION chaos_log_claim()`);

    // What every chaos job does, whatever its type: its behaviour for this attempt (from the seed), the
    // effect, and a record of the run for the invariants.
    const execute = async (payload: ChaosPayload, ctx: JobContext<ChaosServices>): Promise<undefined> => {
      const behaviour = behaviourOf(options.seed, ctx.job.id, ctx.attempt);
      const run: Run = {
        jobId: ctx.job.id,
        attempt: ctx.attempt,
        start: performance.now(),
        end: Number.POSITIVE_INFINITY,
        type: ctx.job.jobType,
        leaseExpiresAt: ctx.job.leaseExpiresAt?.getTime() ?? Number.POSITIVE_INFINITY,
        startedOnDbClock: clock.now().getTime(),
        ...(payload.lane === undefined ? {} : { key: payload.lane }),
      };
      runs.push(run);
      // A local worker's job runs on the worker's hold of the type's slots, not its own lease: read when that
      // hold expires (through a pool no fault kills: the reading is the harness's, not the job's).
      if (ctx.services.slotHolder !== undefined) {
        const hold = await holds
          .query<{ at: Date | null }>(
            'SELECT min(expires_at) AS at FROM job_slots WHERE job_type = :type AND holder = CAST(:holder AS uuid)',
            { type: ctx.job.jobType, holder: ctx.services.slotHolder },
          )
          .then((r) => r.rows[0]?.at ?? null)
          .catch(() => null);
        // No hold found (its slots lapsed and were taken): the run stands on no live hold.
        run.holdExpiresAt = hold?.getTime() ?? Number.NEGATIVE_INFINITY;
      }
      try {
        const effect = async () => {
          await ctx.services.db.query(
            'INSERT INTO chaos_effect_runs (job_id, attempt) VALUES (CAST(:id AS uuid), :attempt)',
            { id: ctx.job.id, attempt: ctx.attempt },
          );
          await ctx.services.db.query(
            'INSERT INTO chaos_effects (job_id, attempt) VALUES (CAST(:id AS uuid), :attempt) ON CONFLICT (job_id) DO NOTHING',
            { id: ctx.job.id, attempt: ctx.attempt },
          );
          if (payload.accrualDay)
            await createCreditService(ctx.services.db).accrueDailyInterest(payload.accrualDay);
          if (payload.processId)
            await createApprovalService(ctx.services.db).processApproval(payload.processId);
          // Enqueued from inside a running job, as the domain's follow-ups are: in a local worker with a
          // free slot it starts eagerly, and it must survive the same crashes as a claimed job.
          if (payload.followUp) await ctx.services.enqueueFollowUp(payload.n);
          if (payload.remindFacility) {
            await createNotificationService(ctx.services.db, countingNotifier).send({
              kind: 'payment-reminder',
              facilityId: payload.remindFacility,
              dueDate: '2026-12-01',
            });
          }
        };
        switch (behaviour) {
          case 'ok':
            await effect();
            return undefined;
          case 'slow':
            await new Promise((r) => setTimeout(r, 5 + Math.random() * 30));
            await effect();
            return undefined;
          case 'throw':
            fault('executor_throws');
            throw new Error('injected failure');
          case 'permanent':
            fault('executor_permanent_failure');
            throw new PermanentJobError('injected permanent failure');
          case 'hang':
            fault('executor_hangs_past_lease');
            await new Promise<void>((_resolve, reject) =>
              ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true }),
            );
            return undefined;
          case 'crash-after-work':
            await effect();
            fault('crash_between_work_and_report');
            ctx.services.crash();
            return undefined;
        }
      } finally {
        run.end = performance.now();
      }
    };

    const registry = new JobTypeRegistry<Record<never, never>, ChaosServices>()
      .register({
        type: 'chaos-effect',
        description: 'does an idempotent effect, or misbehaves',
        // Every tenth job also accrues a day of interest through the real domain SQL: several jobs per day,
        // so duplicates, retries and crashes after the work all hit the accrual's idempotency.
        schema: chaosSchema,
        // Limited, as every type the product ships is: the slotted claims (slots held by the local workers,
        // one slot per claim for the simulated executors) run under every fault.
        concurrency: CHAOS_CONCURRENCY,
        // And per key, as approval processing is per facility: jobs with a lane keep its limit under every fault.
        concurrencyKey: { field: 'lane', limit: CHAOS_KEY_LIMIT },
        timeoutSeconds: 2,
        // The seed's rule (2^n, capped at 2^5) in seconds rather than minutes, so a run walks whole schedules.
        retry: CHAOS_RETRY,
        execute,
      })
      .register({
        type: LIMITED_TYPE,
        description: 'does an idempotent effect, or misbehaves, under a concurrency limit alone',
        schema: z.object({ n: z.number().int() }),
        concurrency: LIMITED_CONCURRENCY,
        timeoutSeconds: 2,
        retry: CHAOS_RETRY,
        execute,
      });

    const tracker = new JobTracker({ db: control, registry, clock });
    await control.query(
      `INSERT INTO credit_facilities (customer_email, facility_limit_cents, drawn_principal_cents, annual_rate,
                                      collateral_sats, created_at)
       SELECT 'b' || g || '@example.com', 100000000, g * 12345, 0.05 + g / 1000.0, 100000000, '2025-12-20Z'
       FROM generate_series(1, 40) g`,
    );
    // What the reminders remind of: an unpaid interest obligation per facility, due on 1 December.
    await control.query(
      `INSERT INTO obligations (facility_id, kind, period_start, period_end, amount_cents, due_date, overdue_date,
                               defaulted_date)
       SELECT id, 'interest', DATE '2026-10-22', DATE '2026-11-21', 100, DATE '2026-12-01', DATE '2026-12-08',
              DATE '2027-03-01'
       FROM credit_facilities`,
    );
    // The last accepted price (a disbursal's cover is checked at it, valid for the whole run) and a
    // one-member disbursal committee.
    await control.query(
      `INSERT INTO collateral_valuations (btc_usd_cents, facilities_valued, below_threshold, basis, priced_at, valid_until)
       VALUES (10000000, 0, 0, 'sources', now(), now() + interval '1 day')`,
    );
    const committeeId = await createCommittee(control, { name: 'chaos', members: ['chair'] });
    await setApprovalPolicy(control, {
      processType: 'disbursal',
      committeeId,
      rule: { kind: 'all-members' },
    });
    const facilities = (
      await control.query<{ id: string }>('SELECT id FROM credit_facilities ORDER BY drawn_principal_cents')
    ).rows.map((r) => r.id);
    await control.query(
      'CREATE TABLE chaos_opening AS SELECT id, drawn_principal_cents FROM credit_facilities',
    );
    // Twenty approval processes whose deciding vote is in: several jobs each, one disbursal each at most.
    const processes: string[] = [];
    for (const facilityId of facilities.slice(0, 20)) {
      // The deciding vote is recorded (and the process concluded) here; the chaos jobs carry it out.
      const id = await createApprovalProcess(control, tracker, { facilityId, amountCents: 1000n });
      await control.transaction((tx) => recordVote(tx, { processId: id, voter: 'chair', approve: true }));
      processes.push(id);
    }
    // The type limited by its concurrency alone: a fifth as many jobs as the keyed type's, enqueued first (so
    // fetch-ready, which claims by due time, sends executors some before the workers join), as many again
    // arriving during the first window of faults; in the second, a backlog for the executors before the
    // workers join and a steady stream (through the control pool, which no fault kills).
    const limitedAtStart = Math.ceil(options.jobs / 5);
    const limitedArriving = Math.ceil(options.jobs / 5);
    const limitedLateBacklog = Math.ceil(options.jobs / 3);
    const limitedLate = Math.ceil(options.jobs / 2);
    let limitedEnqueued = 0;
    const enqueueLimited = (count: number) => {
      const from = limitedEnqueued;
      limitedEnqueued += count;
      return tracker.enqueueMany(
        Array.from({ length: count }, (_, k) => ({
          type: LIMITED_TYPE,
          payload: { n: LIMITED_BASE + from + k },
        })),
      );
    };
    await enqueueLimited(limitedAtStart);
    const accrualDay = (n: number) =>
      new Date(Date.UTC(2026, 0, 1 + ((n / 10) % 15))).toISOString().slice(0, 10);
    await tracker.enqueueMany(
      Array.from({ length: options.jobs }, (_, n) => ({
        type: 'chaos-effect' as const,
        payload:
          n % 10 === 0
            ? { n, accrualDay: accrualDay(n) }
            : n % 10 === 3
              ? { n, processId: processes[Math.floor(n / 10) % processes.length]! }
              : n % 10 === 6
                ? { n, remindFacility: facilities[Math.floor(n / 10) % facilities.length]! }
                : n % 10 === 9
                  ? { n, followUp: true }
                  : n % 10 < 5
                    ? { n, lane: `lane-${n % CHAOS_LANES}` }
                    : { n },
      })),
    );
    log(`enqueued ${options.jobs} jobs and ${limitedAtStart} of ${LIMITED_TYPE} (seed ${options.seed})`);

    const q = async (sql: string) => (await control.query<{ n: number }>(sql)).rows[0]!.n;
    let stopping = false;
    const tasks: Promise<unknown>[] = [];

    // Local workers; a crashed one is replaced by a new process.
    const startWorker = async (i: number, generation: number): Promise<void> => {
      if (stopping) return;
      const db = pool(`w${i}`);
      const workerTracker = new JobTracker({ db: observeStatements(db, countPaths), registry, clock });
      let worker: Worker<typeof registry.schemas, ChaosServices> | undefined;
      const services: ChaosServices = {
        db,
        enqueueFollowUp: followUpEnqueuer(workerTracker),
        crash: () => {
          // A dead process's connections die with it; a new process takes its place.
          void worker
            ?.kill()
            .then(() => db.close())
            .catch(() => {})
            .then(() => {
              setTimeout(() => void startWorker(i, generation + 1), 20);
            });
        },
      };
      worker = new Worker({
        tracker: workerTracker,
        dispatcher: new JobDispatcher(registry, services),
        concurrency: 4,
        claimBatchSize: 8,
        pollIntervalMs: 25,
        rescueIntervalMs: 40,
      });
      services.slotHolder = worker.id;
      workers.push(worker);
      await worker.start();
    };
    const workers: Worker<typeof registry.schemas, ChaosServices>[] = [];

    // The AWS path, as deployed: fetch-ready's loop and the executor Lambda's loop (shared/aws), each
    // "Lambda" talking to the database through the RDS Data API (the local fixture, its own connections).
    // Each simulated Lambda's Data API endpoint, started before the faults (it outlives the windows).
    for (let i = 0; i < options.lambdas; i++) {
      const appUrl = new URL(dbUrl);
      appUrl.searchParams.set('application_name', `chaos-l${i}`);
      fixtures.push(await startDataApiFixture(appUrl.toString(), { poolSize: 4 }));
    }
    const runLambda = async (i: number): Promise<void> => {
      const fixture = fixtures[i]!;
      const db = dataApiDriverOver(fixture, name);
      const lambdaTracker = new JobTracker({ db: observeStatements(db, countPaths), registry, clock });
      let crashed = false;
      const services: ChaosServices = {
        db,
        enqueueFollowUp: followUpEnqueuer(lambdaTracker),
        crash: () => {
          // The execution environment dies after the work: none of its calls arrive any more, so the
          // result is never reported and the lease expires. The next invocation is a fresh environment.
          crashed = true;
          fixture.injectFault({ error: 'ServiceUnavailableError', message: 'environment died', times: 1e9 });
        },
      };
      // The bus: what fetch-ready (and an executor handing its slot over) publishes, with faults.
      const bus: { jobId: string; jobType: string; attempt: number }[] = [];
      const publisher: JobPublisher = {
        maxBatch: 10,
        async publish(events) {
          return events.map((event) => {
            const r = rand();
            if (r < 0.05) {
              // Accepted, never delivered (or fetch-ready died between claim and publish): the claim is
              // handed back once its dispatch lease ends, uncounted.
              fault('fetch_ready_died_before_publishing');
              return { ok: true as const };
            }
            if (r < 0.1) {
              fault('publish_partial_failure_released');
              return { ok: false as const, error: 'InternalFailure: injected' };
            }
            const delivery = { jobId: event.jobId, jobType: event.jobType, attempt: event.attempt };
            bus.push(delivery);
            if (r < 0.2) {
              fault('duplicate_delivery');
              bus.push(delivery);
            }
            return { ok: true as const };
          });
        },
      };
      // One executor function per type, as deployed: the event's type picks it.
      const executors = new Map(
        ['chaos-effect', LIMITED_TYPE].map((jobType) => [
          jobType,
          new AwsExecutor({
            tracker: lambdaTracker,
            dispatcher: new JobDispatcher(registry, services),
            jobType,
            log: silentExecutorLog,
            publisher,
          }),
        ]),
      );
      /** One executor invocation: time for `more` of the type's next jobs, then its slot is handed over. */
      const invoke = async (
        event: { jobId: string; jobType: string; attempt: number },
        more: number | undefined,
      ) => {
        let left = more ?? 0;
        try {
          const result = await executors
            .get(event.jobType)!
            .run(event, more === undefined ? undefined : () => (left-- > 0 ? 15 * 60_000 : 1_000));
          executorRuns += (result.outcome === 'duplicate' ? 0 : 1) + result.nextJobsRun;
          return result;
        } catch {
          // A killed connection or a failed statement: the invocation ends; the lease or the dispatch
          // lease brings the job back.
          return undefined;
        } finally {
          if (crashed) {
            crashed = false;
            fixture.clearFaults();
          }
        }
      };
      const delivered: { jobId: string; jobType: string; attempt: number }[] = [];
      while (!stopping) {
        try {
          await fanOutDueJobs(lambdaTracker, publisher, {
            batchSize: 5,
            maxClaims: 1,
            maxPublishAttempts: 1,
          });
        } catch {
          // As above: the next run starts over, as the next scheduled fetch-ready would.
        }
        // Deliver, sometimes out of order; an invocation with time left takes its type's next jobs.
        while (bus.length > 0) {
          const event = bus.splice(Math.floor(rand() * bus.length), 1)[0]!;
          delivered.push(event);
          await invoke(event, Math.floor(rand() * 4));
        }
        if (delivered.length > 0 && rand() < 0.1) {
          fault('stale_attempt_redelivered');
          const old = delivered[Math.floor(rand() * delivered.length)]!;
          const outcome = await invoke(old, undefined);
          if (outcome && outcome.outcome !== 'duplicate') fault('stale_attempt_ran');
        }
        await new Promise((r) => setTimeout(r, 15));
      }
      await db.close();
    };
    let tick = 0;
    const pausedIntervals: { type: string; from: Date; to: Date }[] = [];
    const serverNow = async () =>
      (await control.query<{ now: Date }>('SELECT clock_timestamp() AS now')).rows[0]!.now;
    /**
     * One window of faults, then a settle until every job has ended: the workers and the Lambdas run under
     * the faults, the limited type's `arrivals` are enqueued over it, and `pausedTypes` take turns at pauses.
     */
    const faultWindow = async (window: {
      name: string;
      ms: number;
      workersJoinAfterMs: number;
      pausedTypes: readonly string[];
      /** A pause begins every this many 400 ms ticks. */
      pauseEveryTicks: number;
      backlog: number;
      arrivals: number;
    }) => {
      await enqueueLimited(window.backlog);
      stopping = false;
      tasks.length = 0;
      for (let i = 0; i < options.lambdas; i++) tasks.push(runLambda(i));
      tasks.push(
        (async () => {
          await new Promise((r) => setTimeout(r, window.workersJoinAfterMs));
          for (let i = 0; i < options.workers; i++) await startWorker(i, 0);
        })(),
      );

      // Every few seconds (and now and then besides) the clock jumps forward past every lease and retry time.
      const clockTimer = setInterval(() => {
        if (tick++ % 3 === 1 || rand() < 0.1) {
          fault('clock_jump');
          offsetMs += 10 * 60_000;
        }
      }, 1000);

      // A chaos type paused for a moment now and then (each of the window's in turn), by an operator's pause
      // through the control pool. Each interval runs from when the pause had committed (its call returned) to
      // when the resume was sent, on the server's clock: no claim statement that reached the server inside it
      // may take the type's jobs.
      let pausing: Promise<void> = Promise.resolve();
      let pauseTick = 0;
      let pauseInFlight = false;
      let pauses = 0;
      const pauser = setInterval(() => {
        // One pause at a time: a second one's resume would end the first's interval early.
        if (pauseTick++ % window.pauseEveryTicks !== 0 || pauseInFlight) return;
        pauseInFlight = true;
        const type = window.pausedTypes[pauses++ % window.pausedTypes.length]!;
        pausing = (async () => {
          await tracker.pauseType(type, { by: 'chaos', reason: 'injected pause' });
          fault('type_paused');
          const from = await serverNow();
          await new Promise((r) => setTimeout(r, 50 + rand() * 200));
          pausedIntervals.push({ type, from, to: await serverNow() });
          await tracker.resumeType(type);
        })()
          .catch(() => {})
          .finally(() => {
            pauseInFlight = false;
          });
      }, 400);

      // Connections killed mid-statement or mid-transaction.
      const killer = setInterval(() => {
        void admin
          .query(
            `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND application_name LIKE 'chaos-%' AND application_name <> 'chaos-control'
               AND state <> 'idle' ORDER BY random() LIMIT 1`,
            [name],
          )
          .then(
            (r) => {
              if (r.rowCount) fault('connection_killed');
            },
            () => {},
          );
      }, 150);

      // The limited type's arrivals, spread evenly over the window.
      const arrivalTicks = Math.max(1, Math.floor(window.ms / 100));
      let arrivalTick = 0;
      let arrived = 0;
      let arriving: Promise<void> = Promise.resolve();
      const arrive = (upTo: number) => {
        const count = upTo - arrived;
        if (count > 0) {
          arrived += count;
          // Joined at once, so a failed enqueue is not an unhandled rejection before the end awaits it.
          arriving = Promise.all([arriving, enqueueLimited(count)]).then(() => {});
        }
      };
      const arrivals = setInterval(
        () => arrive(Math.min(window.arrivals, Math.round((window.arrivals * ++arrivalTick) / arrivalTicks))),
        100,
      );

      await new Promise((r) => setTimeout(r, window.ms));
      clearInterval(killer);
      clearInterval(pauser);
      clearInterval(arrivals);
      arrive(window.arrivals);
      await arriving;
      await pausing;
      for (const type of window.pausedTypes) await tracker.resumeType(type);
      log(`${window.name}: faults stopped; letting the system settle`);

      // Settle: no more injected faults from the clock (it keeps moving steadily), workers finish the rest.
      clearInterval(clockTimer);
      stopping = true;
      await Promise.all(tasks);
      for (const w of workers) await w.stop().catch(() => {});
      workers.length = 0;
      const healthyServices: ChaosServices = {
        db: control,
        crash: () => {},
        enqueueFollowUp: followUpEnqueuer(tracker),
      };
      const healthy = new JobDispatcher(registry, healthyServices);
      const settler = new Worker({
        tracker: new JobTracker({ db: observeStatements(control, countSettlerPaths), registry, clock }),
        dispatcher: healthy,
        concurrency: 8,
        pollIntervalMs: 10,
        rescueIntervalMs: 20,
      });
      healthyServices.slotHolder = settler.id;
      await settler.start();
      // Whenever the settler is idle, move the clock to the next due time (or past leases left by the
      // killed processes) instead of waiting for it: nothing runs across these jumps.
      for (let i = 0; i < 2000; i++) {
        const open = await control.query<{ n: number; next: Date | null }>(
          `SELECT count(*)::int AS n, min(CASE WHEN status = 'running' THEN lease_expires_at ELSE scheduled_at END) AS next
           FROM jobs WHERE status NOT IN ('completed', 'failed', 'cancelled')`,
        );
        if (open.rows[0]!.n === 0) break;
        await settler.idle();
        let next = open.rows[0]!.next;
        if (next && next.getTime() <= clock.now().getTime()) {
          // Due jobs the settler did not take: the slots of their type, or their key, may still be held by
          // a killed process, until its hold or its job's lease expires. A real clock gets there; this one jumps.
          const held = await control.query<{ at: Date | null }>(
            `SELECT LEAST(
               (SELECT min(expires_at) FROM job_slots WHERE holder IS NOT NULL AND holder <> CAST(:settler AS uuid)),
               (SELECT min(lease_expires_at) FROM jobs WHERE status = 'running' AND concurrency_key IS NOT NULL)) AS at`,
            { settler: settler.id },
          );
          if (held.rows[0]!.at) next = held.rows[0]!.at;
        }
        if (next && next.getTime() > clock.now().getTime()) {
          // Also a jump past leases: an executor of a killed process that is still finishing (JavaScript
          // cannot be killed mid-await; a real process would be gone) is then overlapped by the rerun.
          offsetMs += next.getTime() - clock.now().getTime() + 1000;
        }
        await tracker.rescueExpiredLeases();
        settler.wake();
        await new Promise((r) => setTimeout(r, 20));
      }
      await settler.stop();
    };

    // Both types under the faults. In each window the workers join halfway: they claim ahead and would
    // otherwise take nearly every job before the Lambdas' slower Data API round trips, leaving the AWS path
    // next to nothing to run.
    await faultWindow({
      name: 'both types',
      ms: options.faultSeconds * 1000,
      workersJoinAfterMs: (options.faultSeconds * 1000) / 2,
      pausedTypes: [CHAOS_TYPE, LIMITED_TYPE],
      pauseEveryTicks: 2,
      backlog: 0,
      arrivals: limitedArriving,
    });
    // Then the limited type alone under the same faults, twice as long: the executors alone with its backlog
    // (jobs held behind), then the workers too. A worker claims within the slots it holds only while no type
    // with a key (or a rate) has a job due and no type is paused: the keyed type's backlog is due all through
    // the first window, so this is where the workers take that path. Its pauses come half as often: a
    // worker that met one makes full claims for a second (`WITHIN_HOLDS_RETRY_MS`), so pauses 0.8 s apart
    // would leave it hardly a moment to try the claim within holds again.
    await faultWindow({
      name: 'limited type alone',
      ms: 2 * options.faultSeconds * 1000,
      workersJoinAfterMs: options.faultSeconds * 1000,
      pausedTypes: [LIMITED_TYPE],
      pauseEveryTicks: 4,
      backlog: limitedLateBacklog,
      arrivals: limitedLate,
    });

    // Invariants.
    const violations: Record<string, number> = {
      jobs_not_final: await q(
        "SELECT count(*)::int AS n FROM jobs WHERE status NOT IN ('completed', 'failed', 'cancelled')",
      ),
      attempts_over_max: await q('SELECT count(*)::int AS n FROM jobs WHERE attempts > max_attempts'),
      attempts_without_one_closed_execution: await q(
        `SELECT count(*)::int AS n FROM jobs j
         WHERE (SELECT count(*) FROM job_executions e WHERE e.job_id = j.id) <> j.attempts
            OR EXISTS (SELECT 1 FROM generate_series(1, j.attempts) a
                       WHERE NOT EXISTS (SELECT 1 FROM job_executions e WHERE e.job_id = j.id AND e.attempt = a))`,
      ),
      completed_without_effect: await q(
        "SELECT count(*)::int AS n FROM jobs j WHERE status = 'completed' AND NOT EXISTS (SELECT 1 FROM chaos_effects c WHERE c.job_id = j.id)",
      ),
      effect_applied_twice: await q(
        'SELECT count(*)::int AS n FROM (SELECT job_id FROM chaos_effects GROUP BY job_id HAVING count(*) > 1) d',
      ),
      // The real domain effect: each facility's accrued balance equals the sum of its daily rows (a day
      // accrued twice, or a balance raised twice, would break it), and every day a job completed is accrued.
      interest_accrued_twice: await q(
        `SELECT count(*)::int AS n FROM credit_facilities f
         WHERE f.accrued_interest_cents <>
               COALESCE((SELECT sum(interest_cents) FROM interest_accruals a WHERE a.facility_id = f.id), 0)`,
      ),
      // Disbursals: each facility's drawn principal is its opening amount plus its disbursals (a disbursal
      // executed twice would add twice), and every approval a job completed for is concluded.
      disbursal_executed_twice: await q(
        `SELECT count(*)::int AS n FROM credit_facilities f JOIN chaos_opening o ON o.id = f.id
         WHERE f.drawn_principal_cents <>
               o.drawn_principal_cents + COALESCE((SELECT sum(amount_cents) FROM disbursals d WHERE d.facility_id = f.id), 0)`,
      ),
      approval_not_concluded: await q(
        `SELECT count(DISTINCT payload->>'processId')::int AS n FROM jobs j
         WHERE status = 'completed' AND payload ? 'processId'
           AND EXISTS (SELECT 1 FROM approval_processes p WHERE p.id = CAST(j.payload->>'processId' AS uuid) AND p.status = 'pending')`,
      ),
      // A completed job that was to enqueue a follow-up did so (the enqueue is part of its work).
      follow_up_missing: await q(
        `SELECT count(*)::int AS n FROM jobs p
         WHERE p.status = 'completed' AND p.payload ? 'followUp'
           AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.idempotency_key = 'follow-up-of-' || (p.payload->>'n'))`,
      ),
      accrual_day_missing: await q(
        `SELECT count(*)::int AS n FROM (
           SELECT DISTINCT payload->>'accrualDay' AS day FROM jobs
           WHERE status = 'completed' AND payload ? 'accrualDay') d
         WHERE (SELECT count(*) FROM interest_accruals a WHERE a.accrual_date = CAST(d.day AS date)) <> 40`,
      ),
    };
    // Retry times: after a failed attempt n that was retried, the next attempt was claimed no earlier than
    // the backoff allows (the manual clock only moves forward).
    const retries = await control.query<{
      attempt: number;
      offset: number;
      finished_at: Date;
      next_claimed: Date;
    }>(
      `SELECT a.attempt, j.attempt_offset AS offset, a.finished_at, b.claimed_at AS next_claimed
       FROM job_executions a JOIN job_executions b ON b.job_id = a.job_id AND b.attempt = a.attempt + 1
       JOIN jobs j ON j.id = a.job_id
       WHERE a.outcome IN ('failed', 'lease_expired')`,
    );
    violations.retry_before_backoff = retries.rows.filter(
      (r) =>
        r.next_claimed.getTime() <
        r.finished_at.getTime() + backoffSeconds(r.attempt - r.offset, CHAOS_RETRY) * 1000 - 1,
    ).length;
    const { overlapping, overlapsCausedByClockJumps } = classifyOverlaps(
      runs,
      registry.require('chaos-effect').leaseSeconds * 1000,
    );
    const overlaps = overlapping.length;
    // Enough to diagnose a violation from the log alone (the database is dropped at the end).
    for (const { prev, cur } of overlapping.slice(0, 3)) {
      const history = await control.query(
        `SELECT attempt, outcome, claimed_at, started_at, finished_at, error FROM job_executions
         WHERE job_id = CAST(:id AS uuid) ORDER BY attempt`,
        { id: cur.jobId },
      );
      const job = await control.query(
        'SELECT payload, idempotency_key, created_at FROM jobs WHERE id = CAST(:id AS uuid)',
        { id: cur.jobId },
      );
      log(`overlap: ${JSON.stringify({ prev, cur, job: job.rows[0], history: history.rows })}`);
    }
    violations.attempts_running_concurrently = overlaps;
    const claims = await control.query<{ job_id: string; attempt: number; claimed_at: Date }>(
      'SELECT job_id, attempt, claimed_at FROM job_executions',
    );
    const claimedAt = new Map(claims.rows.map((r) => [`${r.job_id}/${r.attempt}`, r.claimed_at.getTime()]));
    for (const r of runs) {
      const at = claimedAt.get(`${r.jobId}/${r.attempt}`);
      if (at !== undefined) r.claimedAt = at;
    }
    const { overruns, overrunsCausedByClockJumps } = classifyKeyOverruns(
      runs,
      registry.require('chaos-effect').leaseSeconds * 1000,
      CHAOS_KEY_LIMIT,
    );
    for (const o of overruns.slice(0, 3)) log(`key limit exceeded: ${JSON.stringify(o)}`);
    violations.key_limit_exceeded = overruns.length;
    // Each type's concurrency limit, across every worker, executor and the settler: no run began while its
    // limit's worth of the type's other jobs ran on live slot holds.
    let typeOverrunsCausedByClockJumps = 0;
    for (const [type, limit, violation] of [
      [CHAOS_TYPE, CHAOS_CONCURRENCY, 'type_limit_exceeded'],
      [LIMITED_TYPE, LIMITED_CONCURRENCY, 'limited_type_limit_exceeded'],
    ] as const) {
      const typed = classifyTypeOverruns(runs, type, limit);
      for (const o of typed.overruns.slice(0, 3)) log(`${type} limit exceeded: ${JSON.stringify(o)}`);
      violations[violation] = typed.overruns.length;
      typeOverrunsCausedByClockJumps += typed.overrunsCausedByClockJumps;
    }
    // Claims whose statement reached the server while the type was paused (see `chaos_claims`).
    let claimedWhilePaused = 0;
    for (const { type, from, to } of pausedIntervals) {
      claimedWhilePaused += (
        await control.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM chaos_claims
           WHERE job_type = :type AND at > CAST(:from AS timestamptz) AND at < CAST(:to AS timestamptz)`,
          { type, from, to },
        )
      ).rows[0]!.n;
    }
    violations.claimed_while_paused = claimedWhilePaused;
    const effectsRerun = await q(
      'SELECT (SELECT count(*) FROM chaos_effect_runs)::int - (SELECT count(*) FROM chaos_effects)::int AS n',
    );
    const outcomes = Object.fromEntries(
      (
        await control.query<{ status: string; n: number }>(
          'SELECT status, count(*)::int AS n FROM jobs GROUP BY status',
        )
      ).rows.map((r) => [r.status, r.n]),
    );
    const reasons = await control.query<{ reason: string; n: number }>(
      `SELECT left(regexp_replace(last_error, '[0-9a-f-]{36}', '<id>', 'g'), 60) AS reason, count(*)::int AS n
       FROM jobs WHERE status = 'failed' GROUP BY 1 ORDER BY 2 DESC LIMIT 5`,
    );
    return {
      jobs: options.jobs,
      seed: options.seed,
      remindersResentAfterCrash: [...sends.values()].filter((n) => n > 1).length,
      failureReasons: Object.fromEntries(reasons.rows.map((r) => [r.reason, r.n])),
      seconds: +((performance.now() - t0) / 1000).toFixed(1),
      faults,
      outcomes,
      violations,
      effectsRerun,
      overlapsCausedByClockJumps,
      keyOverrunsCausedByClockJumps: overrunsCausedByClockJumps,
      typeOverrunsCausedByClockJumps,
      limitedJobs: await q(`SELECT count(*)::int AS n FROM jobs WHERE job_type = '${LIMITED_TYPE}'`),
      limitedPaths,
      settlerPaths,
      executorRuns,
      followUps: await q("SELECT count(*)::int AS n FROM jobs WHERE idempotency_key LIKE 'follow-up-of-%'"),
      // Claimed by the statement that inserted them: their first attempt's claim time is their creation time.
      followUpsStartedEagerly: await q(
        `SELECT count(*)::int AS n FROM jobs j JOIN job_executions e ON e.job_id = j.id AND e.attempt = 1
         WHERE j.idempotency_key LIKE 'follow-up-of-%' AND e.claimed_at = j.created_at`,
      ),
    };
  } finally {
    for (const p of pools) await p.close().catch(() => {});
    for (const f of fixtures) await f.close().catch(() => {});
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
    await admin.end();
  }
}
