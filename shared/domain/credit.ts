import { type Database, date } from '../db/port.js';
import type { CreditService } from '../job-types/services.js';

export interface AccrualResult {
  date: string;
  /** Facilities accrued by this run (0 when the day was already accrued). */
  facilitiesAccrued: number;
  interestCents: bigint;
}

/**
 * Daily interest on every active facility, set-based in ONE statement: each facility's
 * `drawn principal × annual rate / 365`, rounded half up to the cent (PostgreSQL's numeric `round`,
 * exact), one `interest_accruals` row per facility per day, and the facility's accrued balance raised by
 * the rows this statement inserted. `ON CONFLICT DO NOTHING` on (facility, day) means a retry after a
 * partial run, a duplicate cron tick, or a second job for the same day accrues nothing twice; because the
 * balance update only sees newly inserted rows in the same statement, it never double-counts either.
 * Facilities opened after the day, and closed facilities, accrue nothing.
 */
export const accrueDailyInterestSql = `
WITH accrued AS (
  INSERT INTO interest_accruals (facility_id, accrual_date, principal_cents, annual_rate, interest_cents)
  SELECT f.id, CAST(:day AS date), f.drawn_principal_cents, f.annual_rate,
         round(f.drawn_principal_cents * f.annual_rate / 365)::bigint
  FROM credit_facilities f
  WHERE f.status = 'active' AND f.created_at < CAST(:day AS date) + 1
  ON CONFLICT (facility_id, accrual_date) DO NOTHING
  RETURNING facility_id, interest_cents
), balances AS (
  UPDATE credit_facilities f SET accrued_interest_cents = f.accrued_interest_cents + a.interest_cents
  FROM accrued a WHERE f.id = a.facility_id AND a.interest_cents > 0
)
SELECT count(*)::integer AS facilities, COALESCE(sum(interest_cents), 0)::bigint AS interest_cents FROM accrued`;

export function createCreditService(db: Database): CreditService & {
  accrueDailyInterest(day: string, signal?: AbortSignal): Promise<AccrualResult>;
} {
  return {
    async accrueDailyInterest(day: string): Promise<AccrualResult> {
      const res = await db.query<{ facilities: number; interest_cents: bigint }>(accrueDailyInterestSql, {
        day: date(day),
      });
      const row = res.rows[0]!;
      return { date: day, facilitiesAccrued: row.facilities, interestCents: row.interest_cents };
    },
  };
}
