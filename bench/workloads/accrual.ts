import { createCreditService } from '../../shared/domain/credit.js';
import type { BenchServer } from '../support.js';

export interface AccrualBenchResult {
  facilities: number;
  seconds: number;
  accrued: number;
}

/** W4: interest accrual over 100,000 active facilities in one job (one set-based statement). */
export async function interestAccrual(
  server: BenchServer,
  facilities = 100_000,
): Promise<AccrualBenchResult> {
  const { db, drop } = await server.freshDatabase();
  try {
    await db.query(
      `INSERT INTO credit_facilities (customer_email, facility_limit_cents, drawn_principal_cents, annual_rate, created_at)
       SELECT 'borrower' || g || '@example.com', 100000000, (g * 7919) % 100000000, 0.050000 + (g % 100) / 10000.0,
              TIMESTAMPTZ '2020-01-01Z'
       FROM generate_series(1, :n) g`,
      { n: facilities },
    );
    await db.query('VACUUM ANALYZE credit_facilities');
    const credit = createCreditService(db);
    const t = performance.now();
    const result = await credit.accrueDailyInterest('2026-11-27', new AbortController().signal);
    const seconds = (performance.now() - t) / 1000;
    if (result.facilitiesAccrued !== facilities) {
      throw new Error(`W4: accrued ${result.facilitiesAccrued} of ${facilities} facilities`);
    }
    return { facilities, seconds: +seconds.toFixed(2), accrued: result.facilitiesAccrued };
  } finally {
    await drop();
  }
}
