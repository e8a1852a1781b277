import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { z } from 'zod';
import { PgDatabase } from '../../shared/db/pg-driver.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { JobTypeRegistry } from '../../shared/jobs/registry.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { Worker } from '../../shared/runtime/worker.js';
import {
  type BenchServer,
  latencySummary,
  localPostgresCpuMs,
  median,
  settle,
  sleep,
  walBytesSince,
  walPosition,
} from '../support.js';

/**
 * A no-op job type: the benchmark measures the queue, not the work. `concurrency` gives it a limit, as
 * every job type the product ships has one: the path the product takes.
 */
export function noopRegistry(onStart?: (payload: { i: number }) => void, concurrency?: number) {
  return new JobTypeRegistry().register({
    type: 'noop',
    description: 'does nothing',
    schema: z.object({ i: z.number().int() }),
    ...(concurrency === undefined ? {} : { concurrency }),
    execute: async (payload) => {
      onStart?.(payload);
      return undefined;
    },
  });
}

/** The no-op type's concurrency limit in a run: none, or a number (the shipped types all have one). */
export type NoopLimit = number | undefined;

/** The default worker's concurrency: W1 and W2's workers, and the worker W3's claims stand for. */
export const WORKER_CONCURRENCY = 10;

/** How a figure names its path: the unlimited type, or a limit. */
export const limitName = (limit: NoopLimit) => (limit === undefined ? 'no limit' : `limit ${limit}`);

/**
 * W3's claim as a default worker with nothing in hand makes it: with a limit, the slotted claim of a worker
 * holding the type's slots (`WorkerSlots`), as `Worker` sends it.
 */
export function workerClaim(
  tracker: JobTracker<ReturnType<typeof noopRegistry>['schemas']>,
  limit: NoopLimit,
) {
  const worker = randomUUID();
  return (n: number) =>
    limit === undefined
      ? tracker.claimForWorker(n)
      : tracker.claimForWorker(n, { worker, concurrency: WORKER_CONCURRENCY, inHand: {} });
}

export interface ThroughputResult {
  jobs: number;
  enqueueRowsPerSecond: number;
  drainJobsPerSecond: number;
  workerCpuMsPer1000Jobs: number;
  /** All local postgres processes during the drain (null when the server is not local). */
  serverCpuMsPer1000Jobs: number | null;
  walBytesPerJob: number;
  /** The drain's own WAL: without the full-page images that checkpoints (others' on a shared server) cause. */
  walBytesPerJobWithoutFullPageImages: number;
  executionRows: number;
}

/** W1: bulk-enqueue 20,000 no-op jobs, then drain them with the default worker (concurrency 10). */
export async function throughput(
  server: BenchServer,
  jobs = 20_000,
  limit?: NoopLimit,
): Promise<ThroughputResult> {
  const { db, drop } = await server.freshDatabase();
  try {
    const registry = noopRegistry(undefined, limit);
    const tracker = new JobTracker({ db, registry });
    const batch = Array.from({ length: 10_000 }, (_, i) => ({ type: 'noop' as const, payload: { i } }));
    const t0 = performance.now();
    for (let done = 0; done < jobs; done += batch.length)
      await tracker.enqueueMany(batch.slice(0, jobs - done));
    const enqueueSeconds = (performance.now() - t0) / 1000;

    // Default configuration: only what `jobs work` sets.
    const worker = new Worker({ tracker, dispatcher: new JobDispatcher(registry, {}) });
    const wal0 = await walPosition(db);
    const serverCpu0 = localPostgresCpuMs();
    const cpu0 = process.cpuUsage();
    const t1 = performance.now();
    await worker.start();
    await worker.idle(); // resolves once every result is committed
    const drainSeconds = (performance.now() - t1) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const serverCpu1 = localPostgresCpuMs();
    const wal = await walBytesSince(db, wal0);
    await worker.stop();
    const check = await db.query<{ completed: number; executions: number }>(
      `SELECT (SELECT count(*) FROM jobs WHERE status = 'completed')::int AS completed,
              (SELECT count(*) FROM job_executions)::int AS executions`,
    );
    const { completed, executions } = check.rows[0]!;
    if (completed !== jobs) throw new Error(`W1: ${completed} of ${jobs} jobs completed`);
    return {
      jobs,
      enqueueRowsPerSecond: Math.round(jobs / enqueueSeconds),
      drainJobsPerSecond: Math.round(jobs / drainSeconds),
      workerCpuMsPer1000Jobs: +(((cpu.user + cpu.system) / 1000 / jobs) * 1000).toFixed(1),
      serverCpuMsPer1000Jobs:
        serverCpu0 === null || serverCpu1 === null
          ? null
          : Math.round(((serverCpu1 - serverCpu0) / jobs) * 1000),
      walBytesPerJob: Math.round(wal.bytes / jobs),
      walBytesPerJobWithoutFullPageImages: Math.round((wal.bytes - wal.fullPageImageBytes) / jobs),
      executionRows: executions,
    };
  } finally {
    await drop();
  }
}

export interface LimitOneFloorResult {
  jobs: number;
  rounds: number;
  /** The default worker draining no-op jobs of a type limited to 1 (W1's drain, medians of the rounds). */
  workerJobsPerSecond: number;
  /** A bare loop of one-row claim and complete statements on one connection. */
  floorJobsPerSecond: number;
  ratio: number;
}

/**
 * Limit 1's floor: a type that runs one job at a time, drained by the default worker, against the same
 * work with no job system: one connection looping a one-row claim (`FOR UPDATE SKIP LOCKED` on a partial
 * index of ready rows) and a one-row completion, two commits per job. Alternating rounds, medians.
 */
export async function limitOneFloor(
  server: BenchServer,
  jobs = 5_000,
  rounds = 3,
): Promise<LimitOneFloorResult> {
  const worker: number[] = [];
  const floor: number[] = [];
  for (let r = 0; r < rounds; r++) {
    worker.push((await throughput(server, jobs, 1)).drainJobsPerSecond);
    const { url, drop } = await server.freshDatabase(1, { migrate: false });
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      await c.query('CREATE TABLE floor_jobs (id bigserial PRIMARY KEY, state text NOT NULL)');
      await c.query(`CREATE INDEX floor_jobs_ready ON floor_jobs (id) WHERE state = 'ready'`);
      await c.query(`INSERT INTO floor_jobs (state) SELECT 'ready' FROM generate_series(1, $1)`, [jobs]);
      await c.query('VACUUM ANALYZE floor_jobs');
      const t = performance.now();
      for (;;) {
        const claimed = await c.query<{ id: string }>({
          name: 'claim',
          text: `UPDATE floor_jobs SET state = 'running' WHERE id = (
                   SELECT id FROM floor_jobs WHERE state = 'ready' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING id`,
        });
        const id = claimed.rows[0]?.id;
        if (id === undefined) break;
        await c.query({
          name: 'complete',
          text: `UPDATE floor_jobs SET state = 'completed' WHERE id = $1`,
          values: [id],
        });
      }
      floor.push(Math.round(jobs / ((performance.now() - t) / 1000)));
    } finally {
      await c.end();
      await drop();
    }
  }
  return {
    jobs,
    rounds,
    workerJobsPerSecond: median(worker),
    floorJobsPerSecond: median(floor),
    ratio: +(median(worker) / median(floor)).toFixed(2),
  };
}

/** W2's worker: default configuration, LISTEN on, started and left idle a moment before the first job. */
export async function startIdleWorker(db: PgDatabase, registry: ReturnType<typeof noopRegistry>) {
  const tracker = new JobTracker({ db, registry });
  const worker = new Worker({
    tracker,
    dispatcher: new JobDispatcher(registry, {}),
    listen: (onNotify) => db.listen('lana_jobs', onNotify),
  });
  await worker.start();
  await sleep(200);
  return { tracker, worker };
}

export interface LatencyResult {
  jobs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/**
 * W2: an idle worker; 300 jobs enqueued one at a time 20 ms apart; enqueue-to-executor-start latency.
 *
 * `from: 'same-process'` enqueues through the worker's own tracker, default configuration: each job takes
 * the eager start (inserted already claimed, one commit). `'another-process'` enqueues through a second
 * tracker on its own connection pool, as a web process beside the worker would: each job takes the queue
 * path (insert, NOTIFY, LISTEN, claim: two commits).
 *
 * Each path's jobs are split over `rounds` turns, the paths taking turns (in reverse order every other
 * round), so a machine whose speed drifts between minutes weighs on every path alike (with three turns,
 * one path's p50 still moved by a third between runs here, the same code on both paths included). One
 * summary per path.
 */
export async function latencyRounds(
  server: BenchServer,
  from: 'same-process' | 'another-process',
  limits: readonly NoopLimit[],
  jobs = 300,
  rounds = 6,
  gapMs = 20,
): Promise<LatencyResult[]> {
  const samples = limits.map((): number[] => []);
  for (let r = 0; r < rounds; r++) {
    // The order reversed every other round, so that no path always follows the same one.
    const order = [...limits.keys()];
    for (const p of r % 2 === 0 ? order : order.reverse())
      samples[p]!.push(...(await latencySamples(server, from, Math.ceil(jobs / rounds), limits[p], gapMs)));
  }
  return samples.map((s) => latencySummary(s));
}

/**
 * W2 sparse: 24 jobs enqueued in the worker's process one at a time 1.5 s apart, longer than a slot lingers
 * after a type's last job (`DEFAULT_SLOT_LINGER_MS`): the path of a job that comes now and then (an
 * approval, a valuation), which finds no slot of its type held. Three rounds, one summary per path.
 */
export function sparseLatency(server: BenchServer, limits: readonly NoopLimit[]): Promise<LatencyResult[]> {
  return latencyRounds(server, 'same-process', limits, 24, 3, 1_500);
}

/** W2's latencies, one per job (see `latencyRounds`), enqueued `gapMs` apart. */
async function latencySamples(
  server: BenchServer,
  from: 'same-process' | 'another-process',
  jobs: number,
  limit?: NoopLimit,
  gapMs = 20,
): Promise<number[]> {
  const { db, url, drop } = await server.freshDatabase();
  const otherDb = from === 'another-process' ? new PgDatabase({ connectionString: url, max: 2 }) : undefined;
  await settle(url);
  try {
    const enqueuedAt = new Map<number, number>();
    const latencies: number[] = [];
    const registry = noopRegistry(({ i }) => {
      const t = enqueuedAt.get(i);
      if (t !== undefined) latencies.push(performance.now() - t);
    }, limit);
    const { tracker, worker } = await startIdleWorker(db, registry);
    const enqueuer = otherDb ? new JobTracker({ db: otherDb, registry }) : tracker;
    // A web process beside a worker has had its pool open for a while: so has this one, before the first
    // job (else that job's figure includes opening a connection, 20 to 40 ms here).
    if (otherDb) await enqueuer.warmUp(2);
    for (let i = 0; i < jobs; i++) {
      enqueuedAt.set(i, performance.now());
      await enqueuer.enqueue({ type: 'noop', payload: { i } });
      await sleep(gapMs);
    }
    await sleep(100);
    await worker.idle();
    await worker.stop();
    if (latencies.length !== jobs) throw new Error(`W2: ${latencies.length} of ${jobs} jobs started`);
    return latencies;
  } finally {
    await otherDb?.close();
    await drop();
  }
}

export interface LatencyFloor {
  /** A bare INSERT whose statement sends a NOTIFY, a LISTEN connection receiving it, a bare claim. */
  insertNotifyClaim: LatencyResult;
  /** A bare INSERT of a row already marked taken, committed: what the eager start cannot go below. */
  insertOnly: LatencyResult;
  /**
   * The same INSERT again at once, with no idle before it: the difference from `insertOnly` is what waking
   * from 20 ms of idle costs one commit on this machine (the client, the server process and the disk's
   * completion each wake), which no job system can take out of W2.
   */
  insertOnlyBackToBack: LatencyResult;
}

/**
 * W2's floor on this machine today: the same pattern with no job system at all. The queue path is two
 * synchronous commits and a notification (INSERT ... NOTIFY, LISTEN, a one-row UPDATE ... FOR UPDATE SKIP
 * LOCKED); the eager start is one commit (a bare INSERT). The two are measured alternately, so they see the
 * same machine. No queue built on PostgreSQL's durable commits picks a job up faster than these here.
 * The bare INSERT is also repeated at once, to show what the 20 ms of idle before each job costs.
 */
export async function latencyFloor(server: BenchServer, jobs = 300): Promise<LatencyFloor> {
  const { url, drop } = await server.freshDatabase(1, { migrate: false });
  const connect = async () => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    return c;
  };
  const [enqueuer, claimer, listener] = await Promise.all([connect(), connect(), connect()]);
  await settle(url);
  try {
    await enqueuer.query('CREATE TABLE floor_jobs (id bigserial PRIMARY KEY, state text NOT NULL)');
    await listener.query('LISTEN floor_jobs');
    const twoCommits: number[] = [];
    const oneCommit: number[] = [];
    const oneCommitBackToBack: number[] = [];
    const insertTaken = {
      name: 'insert-taken',
      text: `INSERT INTO floor_jobs (state) VALUES ('running') RETURNING id`,
    };
    for (let i = 0; i < jobs; i++) {
      await sleep(20);
      const notified = new Promise<void>((resolve) => listener.once('notification', () => resolve()));
      const t0 = performance.now();
      const inserted = enqueuer.query({
        name: 'enqueue',
        text: `WITH j AS (INSERT INTO floor_jobs (state) VALUES ('ready') RETURNING id)
               SELECT pg_notify('floor_jobs', '') FROM j`,
      });
      await notified;
      await claimer.query({
        name: 'claim',
        text: `UPDATE floor_jobs SET state = 'running' WHERE id = (
                 SELECT id FROM floor_jobs WHERE state = 'ready' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
               RETURNING id`,
      });
      twoCommits.push(performance.now() - t0);
      await inserted;

      await sleep(20);
      const t1 = performance.now();
      await enqueuer.query(insertTaken);
      const t2 = performance.now();
      oneCommit.push(t2 - t1);
      await enqueuer.query(insertTaken);
      oneCommitBackToBack.push(performance.now() - t2);
    }
    return {
      insertNotifyClaim: latencySummary(twoCommits),
      insertOnly: latencySummary(oneCommit),
      insertOnlyBackToBack: latencySummary(oneCommitBackToBack),
    };
  } finally {
    await Promise.all([enqueuer.end(), claimer.end(), listener.end()]);
    await drop();
  }
}

export interface LatencyOverFloor {
  /** Enqueue-to-start of an eager job, as in W2. */
  eagerStart: LatencyResult;
  /** A bare INSERT of a row already marked taken, on the same pool, between those jobs. */
  bareInsert: LatencyResult;
}

/**
 * W2 and its one-commit floor in the same minutes: an idle worker's eager start and a bare INSERT on the
 * same pool, alternately, each after 20 ms idle. W2 and the floor are measured a minute apart, and this
 * machine's commit latency moves between minutes; alternating shows what the job system itself adds.
 */
export async function latencyOverFloor(server: BenchServer, rounds = 300): Promise<LatencyOverFloor> {
  const { db, url, drop } = await server.freshDatabase();
  try {
    await db.query('CREATE TABLE floor_jobs (id bigserial PRIMARY KEY, state text NOT NULL)');
    await settle(url);
    let startedAt = 0;
    const registry = noopRegistry(() => {
      startedAt = performance.now();
    });
    const { tracker, worker } = await startIdleWorker(db, registry);
    const eager: number[] = [];
    const bare: number[] = [];
    for (let i = 0; i < rounds; i++) {
      await sleep(20);
      const t0 = performance.now();
      const { job } = await tracker.enqueue({ type: 'noop', payload: { i } });
      if (job.status !== 'running') throw new Error(`W2 over floor: job ${i} did not take the eager start`);
      eager.push(startedAt - t0); // the eager start runs the executor before enqueue returns
      await sleep(20);
      const t1 = performance.now();
      await db.query(`INSERT INTO floor_jobs (state) VALUES ('running') RETURNING id`);
      bare.push(performance.now() - t1);
    }
    await worker.idle();
    await worker.stop();
    return { eagerStart: latencySummary(eager), bareInsert: latencySummary(bare) };
  } finally {
    await drop();
  }
}
