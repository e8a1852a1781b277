import { z } from 'zod';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { JobTypeRegistry } from '../../shared/jobs/registry.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { Worker } from '../../shared/runtime/worker.js';
import type { BenchServer } from '../support.js';

export interface RateResult {
  limit: number;
  perSeconds: number;
  workers: number;
  seconds: number;
  started: number;
  /** The most attempts begun in any window of `perSeconds` (sliding, by the database's start times). */
  maxInAnyWindow: number;
  /** Attempts begun per second over the run. */
  startsPerSecond: number;
}

/**
 * RATE: a type limited to `limit` starts a second (notification's SES rate, 14), with more jobs due than
 * the rate lets start, drained for `seconds` by two workers on separate connection pools (two processes'
 * worth of claimers). Measured from the attempts' start times as the database recorded them.
 */
export async function rateLimited(server: BenchServer, seconds = 60, limit = 14): Promise<RateResult> {
  const { db, url, drop } = await server.freshDatabase(4);
  const registry = () =>
    new JobTypeRegistry().register({
      type: 'notification',
      description: 'rate-limited sends',
      schema: z.object({ n: z.number().int() }),
      concurrency: 20,
      rateLimit: { limit, perSeconds: 1 },
      // A send takes about as long as a call to SES.
      execute: async () => {
        await new Promise((r) => setTimeout(r, 30));
        return undefined;
      },
    });
  const { PgDatabase } = await import('../../shared/db/pg-driver.js');
  const second = new PgDatabase({ connectionString: url, max: 4 });
  const workers: { start(): Promise<void>; stop(): Promise<void> }[] = [];
  try {
    const tracker = new JobTracker({ db, registry: registry() });
    const jobs = limit * seconds + 200;
    for (let i = 0; i < jobs; i += 1000)
      await tracker.enqueueMany(
        Array.from({ length: Math.min(1000, jobs - i) }, (_, n) => ({
          type: 'notification' as const,
          payload: { n: i + n },
        })),
      );
    for (const pool of [db, second]) {
      const t = new JobTracker({ db: pool, registry: registry() });
      workers.push(
        new Worker({
          tracker: t,
          dispatcher: new JobDispatcher(t.registry, {}),
          concurrency: 10,
          listen: (onNotify) => pool.listen('lana_jobs', onNotify),
        }),
      );
    }
    await Promise.all(workers.map((w) => w.start()));
    await new Promise((r) => setTimeout(r, seconds * 1000));
    await Promise.all(workers.map((w) => w.stop()));
    const res = await db.query<{ at: number }>(
      "SELECT extract(epoch FROM started_at)::float8 * 1000 AS at FROM job_executions WHERE outcome = 'completed' ORDER BY started_at",
    );
    const times = res.rows.map((r) => r.at);
    const first = times[0] ?? 0;
    const inRun = times.filter((at) => at < first + seconds * 1000);
    let most = 0;
    for (let i = 0, j = 0; i < inRun.length; i++) {
      while (inRun[i]! - inRun[j]! >= 1000) j++;
      most = Math.max(most, i - j + 1);
    }
    return {
      limit,
      perSeconds: 1,
      workers: workers.length,
      seconds,
      started: inRun.length,
      maxInAnyWindow: most,
      startsPerSecond: +(inRun.length / seconds).toFixed(2),
    };
  } finally {
    await Promise.all(workers.map((w) => w.stop().catch(() => {})));
    await second.close();
    await drop();
  }
}
