import { createConsoleApp } from '../../shared/console/server.js';
import { createJobTypeRegistry } from '../../shared/job-types/index.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { schedules } from '../../shared/schedules/definitions.js';
import { type BenchServer, median } from '../support.js';

/** The console's pages timed (server side: statements and rendering) as W6 measures them. */
const PAGES = [
  '/',
  '/jobs',
  '/jobs?status=failed',
  '/jobs?type=maintenance',
  '/jobs?status=pending&type=sync',
];

export interface ConsoleResult {
  history: { small: number; large: number };
  /** Median milliseconds per page with each history, and their ratio. */
  pages: { path: string; smallMs: number; largeMs: number; ratio: number }[];
  worstRatio: number;
}

/**
 * W6: each console page costs about the same with 1,000,000 jobs in history as with 10,000, because none
 * reads the history whole. Both databases hold the same live queue (pending, failed, recent completions
 * with their execution rows); only the finished history, two days old, differs. Requests go straight to
 * the console's handler, alternating between the two databases.
 */
export async function consolePages(
  server: BenchServer,
  small = 10_000,
  large = 1_000_000,
  rounds = 30,
): Promise<ConsoleResult> {
  const prepare = async (history: number) => {
    const fresh = await server.freshDatabase(4);
    await fresh.db.query(
      `INSERT INTO jobs (id, job_type, status, attempts, payload, scheduled_at, started_at, completed_at)
       SELECT lana_uuid_v7_floor(now() - interval '3 days' + g * interval '1 ms'),
              (ARRAY['sync', 'notification', 'interest-accrual', 'payment-reminders'])[1 + g % 4],
              CASE WHEN g % 100 = 0 THEN 'cancelled' ELSE 'completed' END, 1, jsonb_build_object('i', g),
              now() - interval '2 days', now() - interval '2 days', now() - interval '2 days'
       FROM generate_series(1, :n) g`,
      { n: history },
    );
    const tracker = new JobTracker({ db: fresh.db, registry: createJobTypeRegistry() });
    await tracker.enqueueUntyped(Array.from({ length: 300 }, () => ({ type: 'sync', payload: {} })));
    await tracker.enqueueUntyped(Array.from({ length: 20 }, () => ({ type: 'maintenance', payload: {} })));
    const claimed = await tracker.fetchReady(120);
    for (const [i, job] of claimed.entries()) {
      if (i % 6 === 0) await tracker.markFailed(job.id, job.attempts, `error ${i % 3}`, { permanent: true });
      else await tracker.markCompleted(job.id, job.attempts, { durationMs: 20 + i });
    }
    await fresh.db.query('VACUUM ANALYZE jobs');
    await fresh.db.query('VACUUM ANALYZE job_execution_records');
    const app = createConsoleApp({ tracker, schedules });
    return { ...fresh, app };
  };
  const a = await prepare(small);
  const b = await prepare(large);
  try {
    const time = async (app: (typeof a)['app'], path: string) => {
      const t = performance.now();
      const res = await app.request(path);
      await res.text();
      if (res.status !== 200) throw new Error(`W6: ${path} answered ${res.status}`);
      return performance.now() - t;
    };
    // Warm both (plans, caches), then alternate.
    for (const p of PAGES) for (let i = 0; i < 3; i++) await Promise.all([time(a.app, p), time(b.app, p)]);
    const pages = [];
    for (const path of PAGES) {
      const sm: number[] = [];
      const lg: number[] = [];
      for (let i = 0; i < rounds; i++) {
        sm.push(await time(a.app, path));
        lg.push(await time(b.app, path));
      }
      const smallMs = +median(sm).toFixed(2);
      const largeMs = +median(lg).toFixed(2);
      pages.push({ path, smallMs, largeMs, ratio: +(largeMs / smallMs).toFixed(2) });
    }
    return {
      history: { small, large },
      pages,
      worstRatio: Math.max(...pages.map((p) => p.ratio)),
    };
  } finally {
    await a.drop();
    await b.drop();
  }
}
