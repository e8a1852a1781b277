import { type Database, uuid } from '../db/port.js';
import type { PortfolioService } from '../job-types/services.js';
import type { JobTracker } from '../jobs/tracker.js';
import { ENQUEUE_PAGE_SIZE, FIRST_PAGE_AFTER_ID, LOCK_FACILITY_BULK_UPDATES_SQL } from './bulk.js';
import type { PriceSource } from './price-source.js';

/** Collateral-to-loan ratio below which a facility gets a margin call. */
export const DEFAULT_MARGIN_CALL_RATIO = '1.2000';

export interface ValuationResult {
  btcUsdCents: bigint;
  facilitiesValued: number;
  marginCalls: number;
}

/** The portfolio service with its result typed (an extension, so callers passing a signal see it too). */
export interface LendingPortfolioService extends PortfolioService {
  revalue(signal?: AbortSignal): Promise<ValuationResult>;
}

/**
 * Portfolio valuation (the `sync` job): fetches the BTC/USD price, then in ONE transaction revalues every
 * active facility's collateral (sats × price / 10^8, rounded half up to the cent exactly with `div()`), its
 * collateral-to-loan ratio (rounded to 4 places), records the run, and enqueues a margin-call notification
 * for each facility below the threshold (at most one per facility per day: its idempotency key). The price
 * is fetched and validated before anything is written, so a bad answer writes nothing and the job retries.
 */
export function createPortfolioService(deps: {
  db: Database;
  jobs: Pick<JobTracker, 'enqueueUntyped'>;
  priceSource: PriceSource;
  marginCallRatio?: string;
}): LendingPortfolioService {
  const threshold = deps.marginCallRatio ?? DEFAULT_MARGIN_CALL_RATIO;
  // Checked here so a misconfiguration fails at start-up, not as a database error on every run.
  if (!/^\d+(\.\d+)?$/.test(threshold)) {
    throw new Error(`margin-call ratio must be a positive decimal such as "1.2", got "${threshold}"`);
  }
  return {
    async revalue(signal) {
      const price = await deps.priceSource.btcUsdCents(signal);
      return deps.db.transaction(async (tx) => {
        await tx.query(LOCK_FACILITY_BULK_UPDATES_SQL);
        // No RETURNING: 100,000 ids would exceed the Data API's 1 MiB response limit. The facilities
        // below the threshold are read back in pages instead.
        const valued = await tx.query(
          `UPDATE credit_facilities
           SET collateral_value_cents = div(collateral_sats::numeric * :price + 50000000, 100000000)::bigint,
               collateral_to_loan_ratio = CASE WHEN drawn_principal_cents > 0
                 THEN round(div(collateral_sats::numeric * :price + 50000000, 100000000) / drawn_principal_cents, 4) END,
               valued_at = now()
           WHERE status = 'active'`,
          { price },
        );
        let marginCalls = 0;
        let after = FIRST_PAGE_AFTER_ID;
        for (;;) {
          // valuation_date: the UTC day of `valued_at` (the database's clock, not this process's).
          const page = await tx.query<{ id: string; valuation_date: string }>(
            `SELECT id, CAST(now() AT TIME ZONE 'UTC' AS date) AS valuation_date
             FROM credit_facilities
             WHERE status = 'active' AND collateral_to_loan_ratio < CAST(:threshold AS numeric)
               AND id > CAST(:after AS uuid)
             ORDER BY id LIMIT ${ENQUEUE_PAGE_SIZE}`,
            { threshold, after: uuid(after) },
          );
          if (page.rows.length === 0) break;
          await deps.jobs.enqueueUntyped(
            page.rows.map((f) => ({
              type: 'notification',
              payload: { kind: 'margin-call', facilityId: f.id, valuationDate: f.valuation_date },
              idempotencyKey: `margin-call:${f.id}:${f.valuation_date}`,
            })),
            { db: tx },
          );
          marginCalls += page.rows.length;
          after = page.rows[page.rows.length - 1]!.id;
          if (page.rows.length < ENQUEUE_PAGE_SIZE) break;
        }
        await tx.query(
          `INSERT INTO collateral_valuations (btc_usd_cents, facilities_valued, below_threshold)
           VALUES (:price, :valued, :below)`,
          { price, valued: valued.rowCount, below: marginCalls },
        );
        return { btcUsdCents: price, facilitiesValued: valued.rowCount, marginCalls };
      });
    },
  };
}
