import { createCreditService } from '../../shared/domain/credit.js';
import type { BenchServer } from '../support.js';

export interface AccrualBenchResult {
  facilities: number;
  /** One day over every facility in one statement. */
  singlePassSeconds: number;
  /** The next day in batches of ACCRUAL_BATCH_SIZE facilities (what the job does). */
  batchedSeconds: number;
  batches: number;
  /** The slowest batch: what must stay well under the Data API's 45 s statement limit. */
  slowestBatchSeconds: number;
  /** batched / single pass. */
  batchedOverSingle: number;
}

/**
 * W4: interest accrual over 100,000 active facilities, one day in a single pass and the next day in the
 * job's bounded batches, in one run (so the ratio, not this machine's absolute speed, is the figure).
 */
export async function interestAccrual(
  server: BenchServer,
  facilities = 100_000,
): Promise<AccrualBenchResult> {
  const { db, drop } = await server.freshDatabase();
  try {
    await db.query(
      `INSERT INTO credit_facilities (customer_email, facility_limit_cents, drawn_principal_cents, annual_rate, created_at)
       SELECT 'borrower' || g || '@example.com', 100000000, (g * 7919) % 100000000, 0.050000 + (g % 100) / 10000.0,
              TIMESTAMPTZ '2026-11-27Z'
       FROM generate_series(1, :n) g`,
      { n: facilities },
    );
    await db.query('VACUUM ANALYZE credit_facilities');
    const signal = new AbortController().signal;
    let t = performance.now();
    const single = await createCreditService(db, { batchSize: facilities }).accrueInterest(
      '2026-11-27',
      signal,
    );
    const singlePassSeconds = (performance.now() - t) / 1000;
    let slowest = 0;
    let batchStart = performance.now();
    const batchedService = createCreditService(db, {
      afterBatch: async () => {
        const now = performance.now();
        slowest = Math.max(slowest, (now - batchStart) / 1000);
        batchStart = now;
      },
    });
    t = performance.now();
    batchStart = t;
    const batched = await batchedService.accrueInterest('2026-11-28', signal);
    const batchedSeconds = (performance.now() - t) / 1000;
    for (const r of [single, batched]) {
      if (r.facilitiesAccrued !== facilities || r.daysAccrued !== facilities) {
        throw new Error(`W4: accrued ${r.daysAccrued} facility-days for ${facilities} facilities`);
      }
    }
    return {
      facilities,
      singlePassSeconds: +singlePassSeconds.toFixed(2),
      batchedSeconds: +batchedSeconds.toFixed(2),
      batches: batched.batches,
      slowestBatchSeconds: +slowest.toFixed(2),
      batchedOverSingle: +(batchedSeconds / singlePassSeconds).toFixed(2),
    };
  } finally {
    await drop();
  }
}
