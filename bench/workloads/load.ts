import { z } from 'zod';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { JobTypeRegistry } from '../../shared/jobs/registry.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { Worker } from '../../shared/runtime/worker.js';
import type { BenchServer } from '../support.js';

export interface LoadResult {
  jobs: number;
  failingShare: number;
  seconds: number;
  jobsPerSecond: number;
  completed: number;
  retrying: number;
  /** Resident memory sampled every 250 ms while draining, in MiB. */
  rssMiB: { start: number; peak: number; end: number; peakInSecondHalf: number };
}

/**
 * Load: 100,000 jobs enqueued and drained by one default worker, one in twenty failing (each failure
 * schedules a retry). Memory should stay flat: the worker holds at most one claim batch and its results.
 */
export async function load(server: BenchServer, jobs = 100_000): Promise<LoadResult> {
  const { db, drop } = await server.freshDatabase();
  try {
    const registry = new JobTypeRegistry().register({
      type: 'mostly-works',
      description: 'fails for one job in twenty',
      schema: z.object({ i: z.number().int() }),
      execute: async ({ i }) => {
        if (i % 20 === 0) throw new Error('injected failure');
        return undefined;
      },
    });
    const tracker = new JobTracker({ db, registry });
    for (let done = 0; done < jobs; done += 10_000) {
      await tracker.enqueueMany(
        Array.from({ length: Math.min(10_000, jobs - done) }, (_, k) => ({
          type: 'mostly-works' as const,
          payload: { i: done + k },
        })),
      );
    }
    global.gc?.();
    const mib = () => Math.round((process.memoryUsage().rss / 2 ** 20) * 10) / 10;
    const samples: { at: number; rss: number }[] = [];
    const start = mib();
    const t = performance.now();
    const sampler = setInterval(() => samples.push({ at: performance.now() - t, rss: mib() }), 250);
    const worker = new Worker({ tracker, dispatcher: new JobDispatcher(registry, {}) });
    await worker.start();
    await worker.idle();
    const seconds = (performance.now() - t) / 1000;
    clearInterval(sampler);
    await worker.stop();
    const counts = await db.query<{ status: string; n: number }>(
      'SELECT status, count(*)::int AS n FROM jobs GROUP BY status',
    );
    const by = Object.fromEntries(counts.rows.map((r) => [r.status, r.n]));
    const half = (seconds * 1000) / 2;
    return {
      jobs,
      failingShare: 0.05,
      seconds: +seconds.toFixed(1),
      jobsPerSecond: Math.round(jobs / seconds),
      completed: by.completed ?? 0,
      retrying: by.retrying ?? 0,
      rssMiB: {
        start,
        peak: Math.max(start, ...samples.map((s) => s.rss)),
        end: mib(),
        peakInSecondHalf: Math.max(0, ...samples.filter((s) => s.at >= half).map((s) => s.rss)),
      },
    };
  } finally {
    await drop();
  }
}
