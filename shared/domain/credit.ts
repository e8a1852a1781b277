import { type Database, date, uuid } from '../db/port.js';
import type { CreditService } from '../job-types/services.js';
import { FIRST_PAGE_AFTER_ID, LOCK_FACILITY_BULK_UPDATES_SQL } from './bulk.js';

export interface AccrualResult {
  /** The last day this run accrued up to: the requested day, or yesterday (database clock) if earlier. */
  upTo: string;
  /** Facilities that got at least one new day (0 when everything was already accrued). */
  facilitiesAccrued: number;
  /** Facility-days accrued by this run. */
  daysAccrued: number;
  interestCents: bigint;
  /** Facility id ranges worked through, one transaction each. */
  batches: number;
}

/**
 * Facilities per batch: each batch is one statement well under the RDS Data API's 45 s limit (W4 in
 * docs/performance.md measures the slowest), so a portfolio of any size finishes in bounded steps.
 */
export const ACCRUAL_BATCH_SIZE = 20_000;

/**
 * Daily interest, set-based, for the facilities with ids in (:after, :upto]: every day that has ended and
 * is not yet accrued, from the day after the facility's last accrued day (or its activation day) up to
 * `:day`, and never past yesterday by the DATABASE clock: a missed midnight, a job that failed for good or
 * a laptop asleep for a week is healed by the next run, and a day that has not ended is never accrued.
 * A facility accrues the days it was open: not from its maturity date on, and after closing only the days
 * that began before it closed (so closing today does not lose yesterday's interest).
 *
 * Each facility-day's interest is `principal × rate / 365` rounded half up to the cent, computed exactly as
 * `floor((2·P·r + 365) / 730)` with `div()` (`round(P·r/365)` is not exact: numeric division rounds the
 * quotient to a finite scale first). The principal is the one drawn at the end of that day: the current
 * drawn principal less the facility's disbursals executed after it. Only the facilities with a disbursal
 * executed after the start of the earliest day this batch accrues (`touched`) have their principal rebuilt
 * day by day; the rest (almost all, on a nightly run) cost one hash lookup.
 *
 * Every span is worked out before the first row is inserted (the one-time test on `earliest` reads them all):
 * a last-day lookup planned as a sequential scan, as it is while the statistics say `interest_accruals` is
 * empty or tiny, would otherwise also read every row the statement had inserted so far, quadratic in the
 * batch.
 *
 * Idempotency: `ON CONFLICT DO NOTHING` on (facility, day), and the balance update only adds the rows this
 * statement inserted, so a retry, a duplicate tick or a second job accrues nothing twice.
 *
 * Plan: the planner cannot know how many days `generate_series` makes per facility (it assumes 1,000), so
 * `per_facility` is joined back to `spans` to tell it there is one row per facility, and the balances are
 * updated by one join over the batch rather than an index probe per facility.
 */
export const accrueInterestBatchSql = `
WITH bound AS (
  SELECT LEAST(CAST(:day AS date), CAST(now() AT TIME ZONE 'UTC' AS date) - 1) AS last_day
), spans AS MATERIALIZED (
  SELECT * FROM (
    SELECT f.id, f.annual_rate, f.drawn_principal_cents,
           COALESCE(last_accrued.accrual_date + 1, CAST(f.created_at AT TIME ZONE 'UTC' AS date)) AS first_day,
           LEAST(b.last_day, f.maturity_date - 1,
                 CAST((f.closed_at AT TIME ZONE 'UTC') - interval '1 microsecond' AS date)) AS last_day
    FROM credit_facilities f
    CROSS JOIN bound b
    LEFT JOIN LATERAL (
      SELECT a.accrual_date FROM interest_accruals a WHERE a.facility_id = f.id
      ORDER BY a.accrual_date DESC LIMIT 1
    ) last_accrued ON true
    WHERE f.id > CAST(:after AS uuid) AND f.id <= CAST(:upto AS uuid)
      AND (f.status = 'active' OR f.closed_at IS NOT NULL)
  ) facility_span
  WHERE first_day <= last_day
), earliest AS (
  SELECT min(first_day) AS first_day FROM spans
), touched AS (
  SELECT DISTINCT ds.facility_id FROM disbursals ds
  WHERE ds.executed_at >= ((SELECT first_day FROM earliest) + 1)::timestamp AT TIME ZONE 'UTC'
    AND ds.facility_id > CAST(:after AS uuid) AND ds.facility_id <= CAST(:upto AS uuid)
), facility_days AS (
  SELECT s.id, s.annual_rate, s.day,
         CASE WHEN t.facility_id IS NULL THEN s.drawn_principal_cents
              ELSE s.drawn_principal_cents - COALESCE((
                SELECT sum(ds.amount_cents) FROM disbursals ds
                WHERE ds.facility_id = s.id
                  AND ds.executed_at >= (s.day + 1)::timestamp AT TIME ZONE 'UTC'), 0)
         END::bigint AS principal_cents
  FROM (SELECT id, annual_rate, drawn_principal_cents,
               first_day + generate_series(0, last_day - first_day) AS day
        FROM spans) s
  LEFT JOIN touched t ON t.facility_id = s.id
), accrued AS (
  INSERT INTO interest_accruals (facility_id, accrual_date, principal_cents, annual_rate, interest_cents)
  SELECT id, day, principal_cents, annual_rate, div(2 * principal_cents * annual_rate + 365, 730)::bigint
  FROM facility_days
  WHERE (SELECT first_day FROM earliest) IS NOT NULL
  ON CONFLICT (facility_id, accrual_date) DO NOTHING
  RETURNING facility_id, interest_cents
), per_facility AS (
  SELECT s.id, a.cents
  FROM spans s
  JOIN (SELECT facility_id, sum(interest_cents)::bigint AS cents FROM accrued GROUP BY facility_id) a
    ON a.facility_id = s.id
), balances AS (
  UPDATE credit_facilities f SET accrued_interest_cents = f.accrued_interest_cents + pf.cents
  FROM per_facility pf
  WHERE f.id = pf.id AND pf.cents > 0 AND f.id > CAST(:after AS uuid) AND f.id <= CAST(:upto AS uuid)
)
SELECT (SELECT count(*) FROM per_facility)::integer AS facilities,
       (SELECT count(*) FROM accrued)::integer AS days,
       COALESCE((SELECT sum(cents) FROM per_facility), 0)::bigint AS interest_cents,
       (SELECT CAST(last_day AS text) FROM bound) AS up_to`;

/**
 * Opens a batch's transaction: the bulk-update lock, and no JIT for the batch statement. Its estimated
 * cost (1,000 days per facility) would have PostgreSQL compile it with full optimisation, which takes
 * longer than running it: the work is index probes and inserts, not expressions.
 */
const BEGIN_ACCRUAL_BATCH_SQL = `${LOCK_FACILITY_BULK_UPDATES_SQL}, set_config('jit', 'off', true)`;

/** The last id of the next batch of facilities after `:after` (NULL when none are left). */
const NEXT_BATCH_END_SQL = `
SELECT id AS upto FROM (
  SELECT id FROM credit_facilities WHERE id > CAST(:after AS uuid) ORDER BY id LIMIT :size
) batch ORDER BY id DESC LIMIT 1`;

/** The credit service with its result typed (an extension, so callers passing a signal see it too). */
export interface LendingCreditService extends CreditService {
  accrueInterest(upTo?: string, signal?: AbortSignal): Promise<AccrualResult>;
  accrueDailyInterest(upTo?: string, signal?: AbortSignal): Promise<AccrualResult>;
}

export function createCreditService(
  db: Database,
  options: { batchSize?: number; afterBatch?: (batch: number) => Promise<void> } = {},
): LendingCreditService {
  const batchSize = options.batchSize ?? ACCRUAL_BATCH_SIZE;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`batch size must be a positive integer`);
  return {
    /**
     * Accrues every ended, not yet accrued day up to `upTo` (default and cap: yesterday, database clock),
     * batch by batch of facility ids, each batch its own transaction: a crash between batches loses
     * nothing, and the re-run accrues exactly what is missing.
     */
    async accrueInterest(upTo, signal) {
      const day = upTo ?? '9999-12-31';
      const result: AccrualResult = {
        upTo: day,
        facilitiesAccrued: 0,
        daysAccrued: 0,
        interestCents: 0n,
        batches: 0,
      };
      let after = FIRST_PAGE_AFTER_ID;
      for (;;) {
        signal?.throwIfAborted();
        const end = (
          await db.query<{ upto: string | null }>(NEXT_BATCH_END_SQL, { after: uuid(after), size: batchSize })
        ).rows[0]?.upto;
        if (!end) break;
        const batch = await db.transaction(async (tx) => {
          await tx.query(BEGIN_ACCRUAL_BATCH_SQL);
          return (
            await tx.query<{ facilities: number; days: number; interest_cents: bigint; up_to: string }>(
              accrueInterestBatchSql,
              { day: date(day), after: uuid(after), upto: uuid(end) },
            )
          ).rows[0]!;
        });
        result.upTo = batch.up_to;
        result.facilitiesAccrued += batch.facilities;
        result.daysAccrued += batch.days;
        result.interestCents += batch.interest_cents;
        result.batches += 1;
        after = end;
        await options.afterBatch?.(result.batches);
      }
      return result;
    },
    accrueDailyInterest(upTo, signal) {
      return this.accrueInterest(upTo, signal);
    },
  };
}
