import { createPortfolioService } from '../../shared/domain/portfolio.js';
import { createJobTypeRegistry } from '../../shared/job-types/index.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { type BenchServer, walBytesSince, walPosition } from '../support.js';

export interface ValuationWalResult {
  facilities: number;
  /** Facilities whose figures changed between the two runs (their accrued interest grew). */
  changed: number;
  /** WAL of the first valuation, which writes every facility (what every run wrote before). */
  walFirstRunMB: number;
  /** WAL of a later valuation at the same price with 1 % of the facilities changed. */
  walOnePercentMB: number;
  rowsWritten: number;
  /** walOnePercent / walFirstRun. */
  ratio: number;
}

/**
 * Valuation WAL: 100,000 facilities valued once (every row written), then 1 % of them accrue interest and
 * the portfolio is valued again at the same price: only those rows (and their notices) are written.
 */
export async function valuationWal(server: BenchServer, facilities = 100_000): Promise<ValuationWalResult> {
  const { db, drop } = await server.freshDatabase();
  try {
    await db.query(
      `INSERT INTO credit_facilities (customer_email, facility_limit_cents, drawn_principal_cents, annual_rate,
                                      collateral_sats)
       SELECT 'borrower' || g || '@example.com', 100000000, 1000000 + (g * 7919) % 5000000, 0.08,
              10000000 + (g % 13) * 1000000
       FROM generate_series(1, :n) g`,
      { n: facilities },
    );
    await db.query('VACUUM ANALYZE credit_facilities');
    const tracker = new JobTracker({ db, registry: createJobTypeRegistry() });
    const portfolio = createPortfolioService({
      db,
      jobs: tracker,
      priceSource: { btcUsdQuote: async () => ({ cents: 10_000_000n, pricedAt: new Date() }) },
    });
    const signal = new AbortController().signal;
    let from = await walPosition(db);
    await portfolio.revalue(signal);
    const walFirst = (await walBytesSince(db, from)).bytes;
    const changed = Math.floor(facilities / 100);
    await db.query(
      `UPDATE credit_facilities SET accrued_interest_cents = accrued_interest_cents + 12345
       WHERE id IN (SELECT id FROM credit_facilities ORDER BY id LIMIT :n)`,
      { n: changed },
    );
    from = await walPosition(db);
    const second = await portfolio.revalue(signal);
    const walSecond = (await walBytesSince(db, from)).bytes;
    if (second.facilitiesChanged !== changed) {
      throw new Error(`valuation WAL: ${second.facilitiesChanged} rows written, ${changed} expected`);
    }
    const mb = (b: number) => +(b / 2 ** 20).toFixed(2);
    return {
      facilities,
      changed,
      walFirstRunMB: mb(walFirst),
      walOnePercentMB: mb(walSecond),
      rowsWritten: second.facilitiesChanged,
      ratio: +(walSecond / walFirst).toFixed(3),
    };
  } finally {
    await drop();
  }
}
