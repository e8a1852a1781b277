import pg from 'pg';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { type BenchServer, median } from '../support.js';
import { limitName, type NoopLimit, noopRegistry, workerClaim } from './core.js';

/** W3 and the bursts: how claims and pickups hold up as history, the waiting queue and idleness grow. */
export interface GrowthResult {
  limit: string;
  jobsPerRound: number;
  small: { history: number; claimCompleteMsPer1000: number };
  large: { history: number; claimCompleteMsPer1000: number };
  ratio: number;
}

/**
 * W3: the cost of claim + complete with 10,000 versus 1,000,000 completed jobs (each its own execution
 * record) in history, for each of `limits` on the same two databases. History is written in bulk by SQL,
 * then analysed, as a long-running system would be.
 */
export async function growth(
  server: BenchServer,
  limits: readonly NoopLimit[] = [undefined],
  large = 1_000_000,
  small = 10_000,
  jobs = 10_000,
  rounds = 5,
): Promise<GrowthResult[]> {
  const prepare = async (history: number) => {
    const fresh = await server.freshDatabase();
    for (let done = 0; done < history; done += 250_000) {
      const n = Math.min(250_000, history - done);
      // A completed job's row is its attempt's record (migration 0026): the duration on the row, no record row.
      await fresh.db.query(
        `INSERT INTO jobs (job_type, payload, status, attempts, claimed_at, started_at, completed_at,
                           lease_expires_at, scheduled_at, created_at, updated_at, duration_ms)
         SELECT 'noop', jsonb_build_object('i', g), 'completed', 1, t, t, t, t + interval '7 minutes', t, t, t, 0
         FROM generate_series(1, :n) g, LATERAL (SELECT now() - interval '1 day' + g * interval '1 ms' AS t) ts`,
        { n },
      );
    }
    await fresh.db.query('VACUUM ANALYZE jobs');
    await fresh.db.query('VACUUM ANALYZE job_execution_records');
    const paths = limits.map((limit) => {
      const tracker = new JobTracker({ db: fresh.db, registry: noopRegistry(undefined, limit) });
      return { tracker, claim: workerClaim(tracker, limit) };
    });
    return { ...fresh, paths };
  };
  /** One round: `jobs / rounds` jobs claimed and completed with the worker's own statements. */
  const round = async ({ tracker, claim }: Awaited<ReturnType<typeof prepare>>['paths'][number]) => {
    const n = Math.ceil(jobs / rounds);
    await tracker.enqueueMany(
      Array.from({ length: n }, (_, i) => ({ type: 'noop' as const, payload: { i } })),
    );
    const t = performance.now();
    for (;;) {
      const { jobs: claimed } = await claim(200);
      if (claimed.length === 0) break;
      await tracker.completeMany(claimed.map((c) => ({ id: c.id, attempt: c.attempts, durationMs: 0 })));
    }
    return ((performance.now() - t) / n) * 1000;
  };
  const smallDb = await prepare(small);
  const largeDb = await prepare(large);
  try {
    // Alternate the databases and the paths round by round and compare medians: the machine's speed drifts.
    const smallMs = limits.map((): number[] => []);
    const largeMs = limits.map((): number[] => []);
    for (let r = 0; r < rounds; r++) {
      for (let p = 0; p < limits.length; p++) {
        smallMs[p]!.push(await round(smallDb.paths[p]!));
        largeMs[p]!.push(await round(largeDb.paths[p]!));
      }
    }
    return limits.map((limit, p) => ({
      limit: limitName(limit),
      jobsPerRound: Math.ceil(jobs / rounds),
      small: { history: small, claimCompleteMsPer1000: +median(smallMs[p]!).toFixed(1) },
      large: { history: large, claimCompleteMsPer1000: +median(largeMs[p]!).toFixed(1) },
      ratio: +(median(largeMs[p]!) / median(smallMs[p]!)).toFixed(2),
    }));
  } finally {
    await smallDb.drop();
    await largeDb.drop();
  }
}

export interface WaitingResult {
  limit: string;
  waiting: number;
  idleClaimMs: { empty: number; waiting: number };
  ratio: number;
}

/**
 * W3, the other way a queue grows: an idle worker's claim (nothing due, so it also asks when the next job
 * is due) on an empty queue versus one with `waiting` jobs scheduled ahead in three priorities, as an
 * outage's retries or tomorrow's reminders would leave it, for each of `limits`. Medians of claims
 * alternating between the two databases and the paths.
 */
export async function waitingGrowth(
  server: BenchServer,
  limits: readonly NoopLimit[] = [undefined],
  waiting = 300_000,
  claims = 60,
): Promise<WaitingResult[]> {
  const prepare = async (n: number) => {
    const fresh = await server.freshDatabase();
    if (n > 0)
      await fresh.db.query(
        `INSERT INTO jobs (job_type, payload, priority, scheduled_at)
         SELECT 'noop', jsonb_build_object('i', g), g % 3, now() + interval '1 day' + g * interval '1 ms'
         FROM generate_series(1, :n) g`,
        { n },
      );
    await fresh.db.query('VACUUM ANALYZE jobs');
    const claims = limits.map((limit) =>
      workerClaim(new JobTracker({ db: fresh.db, registry: noopRegistry(undefined, limit) }), limit),
    );
    return { ...fresh, claims };
  };
  const empty = await prepare(0);
  const full = await prepare(waiting);
  try {
    const claimMs = async (claim: (n: number) => Promise<{ jobs: unknown[] }>) => {
      const t = performance.now();
      const { jobs } = await claim(10);
      if (jobs.length > 0) throw new Error('W3 waiting: a job was due');
      return performance.now() - t;
    };
    const emptyMs = limits.map((): number[] => []);
    const waitingMs = limits.map((): number[] => []);
    for (let i = 0; i < claims; i++) {
      for (let p = 0; p < limits.length; p++) {
        emptyMs[p]!.push(await claimMs(empty.claims[p]!));
        waitingMs[p]!.push(await claimMs(full.claims[p]!));
      }
    }
    return limits.map((limit, p) => ({
      limit: limitName(limit),
      waiting,
      idleClaimMs: { empty: +median(emptyMs[p]!).toFixed(2), waiting: +median(waitingMs[p]!).toFixed(2) },
      ratio: +(median(waitingMs[p]!) / median(emptyMs[p]!)).toFixed(2),
    }));
  } finally {
    await empty.drop();
    await full.drop();
  }
}

export interface BurstResult {
  limit: string;
  burst: { due: number; scheduledAhead: number; runningElsewhere: number };
  claimCompleteMsPer1000: { dueOnly: number; withTheRest: number };
  ratio: number;
}

/**
 * W3, a third way the queue grows: in a burst, under a worker that has been idle. Prepared statements
 * settle on a generic plan per connection, kept until the table's statistics change, so the plans a worker
 * made on an idle queue are the ones that meet the burst. Two databases with 100,000 jobs of history and a
 * worker connection that made its plans on the idle queue; then 10,000 jobs fall due in both, and in the
 * second 20,000 more are scheduled ahead and 2,000 run elsewhere (other workers, executors on AWS). Each
 * drains its due jobs by claims of 100 and batch completions, alternating; the ratio says what the waiting
 * and running jobs cost the drain. Autovacuum is off for `jobs` in both, as between two of its visits: its
 * ANALYZE makes PostgreSQL plan again, a minute or more after the burst.
 */
export async function burstAfterIdle(
  server: BenchServer,
  limit?: NoopLimit,
  due = 10_000,
  claimSize = 100,
): Promise<BurstResult> {
  const burst = { due, scheduledAhead: 2 * due, runningElsewhere: due / 5 };
  const registry = noopRegistry(undefined, limit);
  const insert = (n: number, status: string, scheduledAt: string) =>
    `INSERT INTO jobs (job_type, payload, status, attempts, priority, scheduled_at, completed_at, lease_expires_at)
     SELECT 'noop', jsonb_build_object('i', g), '${status}', ${status === 'pending' ? 0 : 1}, g % 3, ${scheduledAt},
            ${status === 'completed' ? "now() - interval '1 hour'" : 'NULL'},
            ${status === 'pending' ? 'NULL' : "now() + interval '1 hour'"}
     FROM generate_series(1, ${n}) g`;
  const prepare = async (withTheRest: boolean) => {
    const fresh = await server.freshDatabase(1);
    await fresh.db.query('ALTER TABLE jobs SET (autovacuum_enabled = false)');
    await fresh.db.query(insert(100_000, 'completed', "now() - interval '2 hours'"));
    await fresh.db.query('VACUUM ANALYZE jobs');
    const tracker = new JobTracker({ db: fresh.db, registry });
    const claimAsWorker = workerClaim(tracker, limit);
    const cycle = async () => {
      const claim = await claimAsWorker(claimSize);
      await tracker.completeMany(claim.jobs.map((j) => ({ id: j.id, attempt: j.attempts })));
      return claim.jobs.length;
    };
    // The worker's everyday life on an idle queue: a job now and then, claimed and completed.
    for (let i = 0; i < 10; i++) {
      await tracker.enqueue({ type: 'noop', payload: { i } });
      await cycle();
    }
    // The burst, written through another connection, as other processes would.
    const admin = new pg.Client({ connectionString: fresh.url });
    await admin.connect();
    await admin.query(insert(burst.due, 'pending', "now() - interval '1 second'"));
    if (withTheRest) {
      await admin.query(insert(burst.scheduledAhead, 'retrying', "now() + interval '1 hour'"));
      await admin.query(insert(burst.runningElsewhere, 'running', "now() - interval '1 minute'"));
    }
    await admin.end();
    return { ...fresh, cycle };
  };
  const quiet = await prepare(false);
  let busy: Awaited<ReturnType<typeof prepare>> | undefined;
  try {
    busy = await prepare(true);
    const ms = { quiet: 0, busy: 0 };
    const done = { quiet: 0, busy: 0 };
    while (done.quiet < due || done.busy < due) {
      for (const [name, db] of [
        ['quiet', quiet],
        ['busy', busy],
      ] as const) {
        if (done[name] >= due) continue;
        const t = performance.now();
        const n = await db.cycle();
        ms[name] += performance.now() - t;
        if (n === 0) throw new Error(`W3 burst: ${name} found nothing due after ${done[name]} jobs`);
        done[name] += n;
      }
    }
    const per1000 = (name: 'quiet' | 'busy') => +((ms[name] / done[name]) * 1000).toFixed(1);
    return {
      limit: limitName(limit),
      burst,
      claimCompleteMsPer1000: { dueOnly: per1000('quiet'), withTheRest: per1000('busy') },
      ratio: +(per1000('busy') / per1000('quiet')).toFixed(2),
    };
  } finally {
    await quiet.drop();
    await busy?.drop();
  }
}
