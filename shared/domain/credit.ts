import { type Database, date, uuid } from '../db/port.js';
import type { CreditService } from '../job-types/services.js';
import { FIRST_PAGE_AFTER_ID, LOCK_FACILITY_BULK_UPDATES_SQL } from './bulk.js';
import { postInterestCyclesSql } from './obligations.js';

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
  /** Interest obligations posted for the accrual cycles that ended. */
  obligationsPosted: number;
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
 * A facility accrues the days it was open: not from its maturity date on, and once closed only the days
 * that began before it closed (so closing today does not lose yesterday's interest).
 *
 * Gaps: a facility with `accrual_check_from` set (history from before this rule, a deleted accrual, an
 * opening day moved earlier) has its rows from then on counted (one index range); only if there are fewer
 * than days is each day checked and the missing ones accrued. The flag is then cleared. Everyone else only
 * continues after the last accrued day.
 *
 * Precision (actual/365): a day's exact interest is `principal × rate / 365`. The facility keeps the exact
 * running total as `accrued_interest_basis` (Σ principal × rate; the exact interest is basis / 365) and
 * its cents follow the total rounded half up: a day's `interest_cents` is round(total after the day) −
 * round(total before it), computed exactly with `div()` (numeric division would round the quotient
 * first). So the cents accrued are never more than half a cent from the exact interest, however small the
 * daily amount: 10.00 at 5 % accrues 0.50 a year, not 0.00.
 *
 * The principal is the one drawn at the end of that day: the current drawn principal less the facility's
 * disbursals executed after it and less any other principal change recorded after it
 * (`principal_changes`: repayments, corrections). Only the facilities with such an event after the start
 * of the earliest day this batch accrues (`touched`) have their principal rebuilt day by day; the rest
 * (almost all, on a nightly run) cost one hash lookup.
 *
 * Every span is worked out before the first row is inserted (the one-time test on `earliest` reads them all):
 * a last-day lookup planned as a sequential scan, as it is while the statistics say `interest_accruals` is
 * empty or tiny, would otherwise also read every row the statement had inserted so far, quadratic in the
 * batch.
 *
 * Idempotency: `ON CONFLICT DO NOTHING` on (facility, day) (the batch lock means a second run sees the
 * first's rows and plans none of them), and the balance update only adds the rows this statement
 * inserted, so a retry, a duplicate tick or a second job accrues nothing twice.
 *
 * Plan: the planner cannot know how many days `generate_series` makes per facility (it assumes 1,000), so
 * `per_facility` is joined back to `spans` to tell it there is one row per facility, and the balances are
 * updated by one join over the batch rather than an index probe per facility.
 *
 * `cycles_ended` counts the facilities whose accrued span reached the end of an accrual cycle: only then
 * does the batch post obligations (`postInterestCyclesSql`).
 */
/**
 * A facility's last day of accrual (facility row `f`): the day before maturity, or for a closed facility
 * the last day that began before it closed; NULL while neither applies. A closed facility is never
 * reopened (a trigger refuses it).
 */
export const LAST_OPEN_DAY_SQL = `LEAST(f.maturity_date - 1,
  CASE WHEN f.status = 'closed' THEN CAST((f.closed_at AT TIME ZONE 'UTC') - interval '1 microsecond' AS date) END)`;

export const accrueInterestBatchSql = `
WITH bound AS (
  SELECT LEAST(CAST(:day AS date), CAST(now() AT TIME ZONE 'UTC' AS date) - 1) AS last_day
), spans AS MATERIALIZED (
  SELECT * FROM (
    SELECT fs.*,
           CASE WHEN fs.has_holes THEN fs.check_from_day
                ELSE COALESCE(fs.last_accrued + 1, fs.start_day) END AS first_day
    FROM (
      SELECT f.id, f.annual_rate, f.drawn_principal_cents, f.accrued_interest_basis AS basis,
             f.accrual_check_from IS NOT NULL AS healing,
             CAST(f.created_at AT TIME ZONE 'UTC' AS date) AS start_day,
             last_accrued.accrual_date AS last_accrued,
             GREATEST(f.accrual_check_from, CAST(f.created_at AT TIME ZONE 'UTC' AS date)) AS check_from_day,
             -- Counted only for a flagged facility: fewer rows than days since the flag means holes.
             CASE WHEN f.accrual_check_from IS NULL THEN false
                  ELSE COALESCE((
                    SELECT count(*) FROM interest_accruals a
                    WHERE a.facility_id = f.id
                      AND a.accrual_date >= GREATEST(f.accrual_check_from, CAST(f.created_at AT TIME ZONE 'UTC' AS date))
                      AND a.accrual_date <= last_accrued.accrual_date
                  ) < last_accrued.accrual_date
                      - GREATEST(f.accrual_check_from, CAST(f.created_at AT TIME ZONE 'UTC' AS date)) + 1, false)
             END AS has_holes,
             LEAST(b.last_day, ${LAST_OPEN_DAY_SQL}) AS last_day,
             ${LAST_OPEN_DAY_SQL} AS stop_day
      FROM credit_facilities f
      CROSS JOIN bound b
      LEFT JOIN LATERAL (
        SELECT a.accrual_date FROM interest_accruals a WHERE a.facility_id = f.id
        ORDER BY a.accrual_date DESC LIMIT 1
      ) last_accrued ON true
      WHERE f.id > CAST(:after AS uuid) AND f.id <= CAST(:upto AS uuid)
        AND (f.status = 'active' OR f.closed_at IS NOT NULL)
    ) fs
  ) facility_span
  WHERE first_day <= last_day OR healing
), earliest AS (
  SELECT min(first_day) AS first_day FROM spans
), touched AS (
  SELECT ds.facility_id FROM disbursals ds
  WHERE ds.executed_at >= ((SELECT first_day FROM earliest) + 1)::timestamp AT TIME ZONE 'UTC'
    AND ds.facility_id > CAST(:after AS uuid) AND ds.facility_id <= CAST(:upto AS uuid)
  UNION
  SELECT pc.facility_id FROM principal_changes pc
  WHERE pc.changed_at >= ((SELECT first_day FROM earliest) + 1)::timestamp AT TIME ZONE 'UTC'
    AND pc.facility_id > CAST(:after AS uuid) AND pc.facility_id <= CAST(:upto AS uuid)
), facility_days AS (
  SELECT s.id, s.annual_rate, s.basis, s.day,
         CASE WHEN t.facility_id IS NULL THEN s.drawn_principal_cents
              ELSE s.drawn_principal_cents - COALESCE((
                SELECT sum(ds.amount_cents) FROM disbursals ds
                WHERE ds.facility_id = s.id
                  AND ds.executed_at >= (s.day + 1)::timestamp AT TIME ZONE 'UTC'), 0)
                - COALESCE((
                SELECT sum(pc.delta_cents) FROM principal_changes pc
                WHERE pc.facility_id = s.id
                  AND pc.changed_at >= (s.day + 1)::timestamp AT TIME ZONE 'UTC'), 0)
         END::bigint AS principal_cents
  FROM (SELECT id, annual_rate, basis, drawn_principal_cents, has_holes,
               first_day + generate_series(0, last_day - first_day) AS day
        FROM spans WHERE first_day <= last_day) s
  LEFT JOIN touched t ON t.facility_id = s.id
  WHERE NOT s.has_holes
     OR NOT EXISTS (SELECT 1 FROM interest_accruals a WHERE a.facility_id = s.id AND a.accrual_date = s.day)
), running AS (
  SELECT id, day, principal_cents, annual_rate, basis, principal_cents * annual_rate AS product,
         basis + sum(principal_cents * annual_rate) OVER (PARTITION BY id ORDER BY day) AS total
  FROM facility_days
), accrued AS (
  INSERT INTO interest_accruals (facility_id, accrual_date, principal_cents, annual_rate, interest_cents)
  SELECT id, day, principal_cents, annual_rate,
         (div(2 * total + 365, 730) - div(2 * (total - product) + 365, 730))::bigint
  FROM running
  WHERE (SELECT first_day FROM earliest) IS NOT NULL
  ON CONFLICT (facility_id, accrual_date) DO NOTHING
  RETURNING facility_id, interest_cents, principal_cents * annual_rate AS product
), per_facility AS (
  SELECT s.id, s.healing, COALESCE(a.cents, 0) AS cents, COALESCE(a.product, 0) AS product, COALESCE(a.days, 0) AS days
  FROM spans s
  LEFT JOIN (SELECT facility_id, sum(interest_cents)::bigint AS cents, sum(product) AS product, count(*) AS days
             FROM accrued GROUP BY facility_id) a
    ON a.facility_id = s.id
  WHERE a.facility_id IS NOT NULL OR s.healing
), balances AS (
  UPDATE credit_facilities f
  SET accrued_interest_cents = f.accrued_interest_cents + pf.cents,
      accrued_interest_basis = f.accrued_interest_basis + pf.product,
      accrual_check_from = CASE WHEN pf.healing THEN NULL ELSE f.accrual_check_from END,
      -- A facility from before obligations may carry a due date set by hand: from now on it is derived.
      next_payment_due = CASE WHEN pf.healing
                              THEN (SELECT min(o.due_date) FROM obligations o
                                    WHERE o.facility_id = f.id AND o.settled_at IS NULL)
                              ELSE f.next_payment_due END
  FROM per_facility pf
  WHERE f.id = pf.id AND (pf.product > 0 OR pf.healing) AND f.id > CAST(:after AS uuid) AND f.id <= CAST(:upto AS uuid)
)
SELECT (SELECT count(*) FROM per_facility WHERE days > 0)::integer AS facilities,
       (SELECT count(*) FROM accrued)::integer AS days,
       COALESCE((SELECT sum(cents) FROM per_facility), 0)::bigint AS interest_cents,
       (SELECT count(*) FROM spans
        WHERE first_day <= last_day
          AND ((date_trunc('month', first_day) + interval '1 month')::date - 1 <= last_day OR last_day = stop_day)
       )::integer AS cycles_ended,
       (SELECT CAST(last_day AS text) FROM bound) AS up_to`;

const POST_INTEREST_CYCLES_SQL = postInterestCyclesSql(LAST_OPEN_DAY_SQL);

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
        obligationsPosted: 0,
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
          const range = { after: uuid(after), upto: uuid(end) };
          const accrued = (
            await tx.query<{
              facilities: number;
              days: number;
              interest_cents: bigint;
              cycles_ended: number;
              up_to: string;
            }>(accrueInterestBatchSql, { day: date(day), ...range })
          ).rows[0]!;
          // A cycle posts in the transaction that accrues its last day (most nights none ends).
          const posted =
            accrued.cycles_ended > 0
              ? (await tx.query<{ obligations: number }>(POST_INTEREST_CYCLES_SQL, range)).rows[0]!
                  .obligations
              : 0;
          return { ...accrued, posted };
        });
        result.upTo = batch.up_to;
        result.facilitiesAccrued += batch.facilities;
        result.daysAccrued += batch.days;
        result.interestCents += batch.interest_cents;
        result.batches += 1;
        result.obligationsPosted += batch.posted;
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
