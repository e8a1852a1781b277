import { type Database, date } from '../db/port.js';
import type { CreditService } from '../job-types/services.js';
import { LOCK_FACILITY_BULK_UPDATES_SQL } from './bulk.js';

export interface AccrualResult {
  date: string;
  /** Facilities accrued by this run (0 when the day was already accrued). */
  facilitiesAccrued: number;
  interestCents: bigint;
}

/**
 * Daily interest on every active facility, set-based in ONE statement: each facility's
 * `drawn principal × annual rate / 365` cents, one `interest_accruals` row per facility per day, and the
 * facility's accrued balance raised by the rows this statement inserted.
 *
 * Rounding: half up to the cent, per facility per day, computed exactly as
 * `floor((2·P·r + 365) / 730)` = `floor(P·r/365 + ½)` with `div()`, which truncates exactly. (`round(P·r/365)`
 * is not exact: numeric division first rounds the quotient to a finite scale, and from about 10^8 cents of
 * daily interest a value just below .5 comes out as .5 and rounds up.)
 *
 * Idempotency: `ON CONFLICT DO NOTHING` on (facility, day) means a retry after a partial run, a duplicate
 * cron tick, or a second job for the same day accrues nothing twice; the balance update only sees the rows
 * this statement inserted, so it never double-counts either. Closed facilities and facilities opened after
 * the (UTC) day accrue nothing; an active facility with nothing drawn gets a zero row (it was considered).
 * The principal is the one drawn at the end of the (UTC) day: the current drawn principal less the
 * disbursals executed after the day (here principal changes only by disbursals). The nightly run for the
 * day just ended sees none of those; a back-filled or late day accrues on what was drawn then, not on today's.
 */
export const accrueDailyInterestSql = `
WITH later AS (
  SELECT facility_id, sum(amount_cents) AS cents FROM disbursals
  WHERE executed_at >= (CAST(:day AS date) + 1)::timestamp AT TIME ZONE 'UTC'
  GROUP BY facility_id
), accrued AS (
  INSERT INTO interest_accruals (facility_id, accrual_date, principal_cents, annual_rate, interest_cents)
  SELECT f.id, CAST(:day AS date), p.cents, f.annual_rate, div(2 * p.cents * f.annual_rate + 365, 730)::bigint
  FROM credit_facilities f
  LEFT JOIN later l ON l.facility_id = f.id
  CROSS JOIN LATERAL (SELECT (f.drawn_principal_cents - COALESCE(l.cents, 0))::bigint AS cents) p
  WHERE f.status = 'active'
    AND f.created_at < (CAST(:day AS date) + 1)::timestamp AT TIME ZONE 'UTC'
  ON CONFLICT (facility_id, accrual_date) DO NOTHING
  RETURNING facility_id, interest_cents
), balances AS (
  UPDATE credit_facilities f SET accrued_interest_cents = f.accrued_interest_cents + a.interest_cents
  FROM accrued a WHERE f.id = a.facility_id AND a.interest_cents > 0
)
SELECT count(*)::integer AS facilities, COALESCE(sum(interest_cents), 0)::bigint AS interest_cents FROM accrued`;

/** The credit service with its result typed (an extension, so callers passing a signal see it too). */
export interface LendingCreditService extends CreditService {
  accrueDailyInterest(day: string, signal?: AbortSignal): Promise<AccrualResult>;
}

export function createCreditService(db: Database): LendingCreditService {
  return {
    async accrueDailyInterest(day: string): Promise<AccrualResult> {
      const res = await db.transaction(async (tx) => {
        await tx.query(LOCK_FACILITY_BULK_UPDATES_SQL);
        return tx.query<{ facilities: number; interest_cents: bigint }>(accrueDailyInterestSql, {
          day: date(day),
        });
      });
      const row = res.rows[0]!;
      return { date: day, facilitiesAccrued: row.facilities, interestCents: row.interest_cents };
    },
  };
}
