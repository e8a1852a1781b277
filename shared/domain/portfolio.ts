import type { Database } from '../db/port.js';
import type { PortfolioService } from '../job-types/services.js';
import type { JobTracker } from '../jobs/tracker.js';
import { utcDay } from './money.js';
import type { PriceSource } from './price-source.js';

/** Collateral-to-loan ratio below which a facility gets a margin call. */
export const DEFAULT_MARGIN_CALL_RATIO = '1.2000';

export interface ValuationResult {
  btcUsdCents: bigint;
  facilitiesValued: number;
  marginCalls: number;
}

/**
 * Portfolio valuation (the `sync` job): fetches the BTC/USD price, then in ONE transaction revalues every
 * active facility's collateral (sats × price, rounded to the cent), its collateral-to-loan ratio, records
 * the run, and enqueues a margin-call notification for each facility below the threshold (at most one
 * per facility per day: its idempotency key). The price is fetched and validated before anything is
 * written, so a bad answer writes nothing and the job retries.
 */
export function createPortfolioService(deps: {
  db: Database;
  jobs: Pick<JobTracker, 'enqueueUntyped'>;
  priceSource: PriceSource;
  marginCallRatio?: string;
}): PortfolioService & { revalue(signal?: AbortSignal): Promise<ValuationResult> } {
  const threshold = deps.marginCallRatio ?? DEFAULT_MARGIN_CALL_RATIO;
  return {
    async revalue(signal) {
      const price = await deps.priceSource.btcUsdCents(signal);
      return deps.db.transaction(async (tx) => {
        const valued = await tx.query<{ id: string; below: boolean }>(
          `UPDATE credit_facilities
           SET collateral_value_cents = round(collateral_sats::numeric * :price / 100000000)::bigint,
               collateral_to_loan_ratio = CASE WHEN drawn_principal_cents > 0
                 THEN round(round(collateral_sats::numeric * :price / 100000000) / drawn_principal_cents, 4) END,
               valued_at = now()
           WHERE status = 'active'
           RETURNING id, (collateral_to_loan_ratio < CAST(:threshold AS numeric)) AS below`,
          { price, threshold },
        );
        const below = valued.rows.filter((r) => r.below);
        const day = utcDay(new Date());
        for (let i = 0; i < below.length; i += 5000) {
          await deps.jobs.enqueueUntyped(
            below.slice(i, i + 5000).map((f) => ({
              type: 'notification',
              payload: { kind: 'margin-call', facilityId: f.id, valuationDate: day },
              idempotencyKey: `margin-call:${f.id}:${day}`,
            })),
            { db: tx },
          );
        }
        await tx.query(
          `INSERT INTO collateral_valuations (btc_usd_cents, facilities_valued, below_threshold)
           VALUES (:price, :valued, :below)`,
          { price, valued: valued.rowCount, below: below.length },
        );
        return { btcUsdCents: price, facilitiesValued: valued.rowCount, marginCalls: below.length };
      });
    },
  };
}
