import { EventEmitter } from 'node:events';
import pg from 'pg';
import {
  type BenchServer,
  latencySummary,
  localPostgresCpuMs,
  settle,
  sleep,
  walBytesSince,
  walPosition,
} from '../support.js';

/**
 * graphile-worker on the same server and the same workloads as W1 and W2, so the comparison the issue asks
 * for is made in one run on one machine (figures from another day are not comparable here: this machine is
 * shared and its speed varies by a factor of three). "Tuned" is what graphile-worker's docs recommend for
 * throughput: a local queue of 500 and batched completion.
 *
 * graphile-worker is not a dependency of the project: install it beside it first, without saving,
 * `npm install --no-save graphile-worker@0.18.0`. Nothing of it is copied here; it is driven only through
 * its public API (`run`, `makeWorkerUtils`).
 */
export interface PeerResult {
  package: string;
  W1: {
    enqueueRowsPerSecond: number;
    drainJobsPerSecond: number;
    processCpuMsPer1000Jobs: number;
    serverCpuMsPer1000Jobs: number | null;
    walBytesPerJob: number;
    walBytesPerJobWithoutFullPageImages: number;
  };
  W2: { jobs: number; p50Ms: number; p99Ms: number; maxMs: number };
}

export interface GraphileWorkerApi {
  Logger: new (factory: () => () => void) => unknown;
  run(options: Record<string, unknown>): Promise<{ stop(): Promise<void> }>;
  makeWorkerUtils(options: { pgPool: pg.Pool }): Promise<{
    migrate(): Promise<void>;
    addJob(identifier: string, payload: unknown): Promise<unknown>;
    addJobs(specs: { identifier: string; payload: unknown }[]): Promise<unknown>;
    release(): Promise<void>;
  }>;
}

export async function loadGraphileWorker(): Promise<GraphileWorkerApi | null> {
  try {
    const name = 'graphile-worker';
    return (await import(name)) as GraphileWorkerApi;
  } catch {
    return null;
  }
}

const TUNED = { concurrentJobs: 10, localQueue: { size: 500 }, completeJobBatchDelay: 0, pollInterval: 2000 };
const silentLogFactory = () => () => {};

const poolFor = async (gw: GraphileWorkerApi, url: string) => {
  const pool = new pg.Pool({ connectionString: url, max: 12 });
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return { pool, logger: new gw.Logger(silentLogFactory) };
};

/**
 * W1 on graphile-worker: bulk enqueue 20,000 no-op jobs, then drain with concurrency 10; done when the
 * queue table is empty (graphile-worker deletes a job when its completion commits). `npm run bench` runs
 * it in W1's alternating rounds, beside this project's paths.
 */
export async function graphileWorkerDrain(
  server: BenchServer,
  gw: GraphileWorkerApi,
): Promise<PeerResult['W1']> {
  const common = (url: string) => poolFor(gw, url);
  const w1 = await server.freshDatabase(1, { migrate: false });
  let W1: PeerResult['W1'];
  // Released in `finally` too: dropping the database under a live pool would end the process.
  let utils1: Awaited<ReturnType<GraphileWorkerApi['makeWorkerUtils']>> | undefined;
  let utilsPool1: pg.Pool | undefined;
  let pool1: pg.Pool | undefined;
  try {
    // Its utilities on a pool of ours, which ignores the errors of connections the drop ends.
    const utilsPool = (await common(w1.url)).pool;
    utilsPool1 = utilsPool;
    const utils = await gw.makeWorkerUtils({ pgPool: utilsPool });
    utils1 = utils;
    await utils.migrate();
    const t0 = performance.now();
    for (let done = 0; done < 20_000; done += 10_000)
      await utils.addJobs(Array.from({ length: 10_000 }, (_, i) => ({ identifier: 'noop', payload: { i } })));
    const enqueueSeconds = (performance.now() - t0) / 1000;
    const { pool, logger } = await common(w1.url);
    pool1 = pool;
    const wal0 = await walPosition(w1.db);
    const serverCpu0 = localPostgresCpuMs();
    const cpu0 = process.cpuUsage();
    const t1 = performance.now();
    const runner = await gw.run({
      pgPool: pool,
      logger,
      noHandleSignals: true,
      events: new EventEmitter(),
      taskList: { noop: async () => {} },
      preset: { worker: TUNED },
    });
    for (;;) {
      const r = await pool.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM graphile_worker._private_jobs',
      );
      if (r.rows[0]!.n === 0) break;
      await sleep(2);
    }
    const drainSeconds = (performance.now() - t1) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const serverCpu1 = localPostgresCpuMs();
    const wal = await walBytesSince(w1.db, wal0);
    await runner.stop();
    W1 = {
      enqueueRowsPerSecond: Math.round(20_000 / enqueueSeconds),
      drainJobsPerSecond: Math.round(20_000 / drainSeconds),
      // Includes the completion poll's own small queries.
      processCpuMsPer1000Jobs: +((cpu.user + cpu.system) / 1000 / 20).toFixed(1),
      serverCpuMsPer1000Jobs:
        serverCpu0 === null || serverCpu1 === null ? null : Math.round((serverCpu1 - serverCpu0) / 20),
      walBytesPerJob: Math.round(wal.bytes / 20_000),
      walBytesPerJobWithoutFullPageImages: Math.round((wal.bytes - wal.fullPageImageBytes) / 20_000),
    };
  } finally {
    await pool1?.end().catch(() => {});
    await utils1?.release().catch(() => {});
    await utilsPool1?.end().catch(() => {});
    await w1.drop();
  }
  return W1;
}

/** W1 (unless given, from W1's rounds) and W2 on graphile-worker. */
export async function graphileWorker(
  server: BenchServer,
  gw: GraphileWorkerApi,
  drained?: PeerResult['W1'],
): Promise<PeerResult> {
  const common = (url: string) => poolFor(gw, url);
  const W1 = drained ?? (await graphileWorkerDrain(server, gw));

  // W2: an idle worker; 300 jobs added one at a time 20 ms apart; add-to-task-start latency.
  const w2 = await server.freshDatabase(1, { migrate: false });
  let W2: PeerResult['W2'];
  let utils2: Awaited<ReturnType<GraphileWorkerApi['makeWorkerUtils']>> | undefined;
  let utilsPool2: pg.Pool | undefined;
  let pool2: pg.Pool | undefined;
  try {
    const utilsPool = (await common(w2.url)).pool;
    utilsPool2 = utilsPool;
    const utils = await gw.makeWorkerUtils({ pgPool: utilsPool });
    utils2 = utils;
    await utils.migrate();
    await settle(w2.url);
    const { pool, logger } = await common(w2.url);
    pool2 = pool;
    const addedAt = new Map<number, number>();
    const latencies: number[] = [];
    const runner = await gw.run({
      pgPool: pool,
      logger,
      noHandleSignals: true,
      events: new EventEmitter(),
      taskList: {
        noop: async (payload: { i: number }) => {
          latencies.push(performance.now() - addedAt.get(payload.i)!);
        },
      },
      preset: { worker: TUNED },
    });
    await sleep(200);
    for (let i = 0; i < 300; i++) {
      addedAt.set(i, performance.now());
      await utils.addJob('noop', { i });
      await sleep(20);
    }
    await sleep(300);
    await runner.stop();
    W2 = latencySummary(latencies);
  } finally {
    await pool2?.end().catch(() => {});
    await utils2?.release().catch(() => {});
    await utilsPool2?.end().catch(() => {});
    await w2.drop();
  }
  return { package: 'graphile-worker', W1, W2 };
}
