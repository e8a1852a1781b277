import type { Database } from '../../shared/db/port.js';
import { date } from '../../shared/db/port.js';
import { LOCK_FACILITY_BULK_UPDATES_SQL } from '../../shared/domain/bulk.js';
import { createCreditService } from '../../shared/domain/credit.js';
import { type BenchServer, median } from '../support.js';

export interface AccrualBenchResult {
  facilities: number;
  rounds: number;
  /** Median seconds to accrue one day over every facility with the floor statement. */
  floorSeconds: number;
  /** Median seconds for the job's code in one batch (one statement over every facility). */
  singlePassSeconds: number;
  /** Median seconds for the job's code in batches of ACCRUAL_BATCH_SIZE facilities (what the job does). */
  batchedSeconds: number;
  batches: number;
  /** The slowest batch of any round: what must stay well under the Data API's 45 s statement limit. */
  slowestBatchSeconds: number;
  /** Medians of the per-round ratios (each round runs all three within a few seconds of each other). */
  singleOverFloor: number;
  batchedOverFloor: number;
  batchedOverSingle: number;
}

/**
 * The floor: the statement accrual ran before it caught up (issue 17), one given day for every active
 * facility in one INSERT ... SELECT and one UPDATE, with no facility history, no catch-up and no batches.
 * It accrues the same rows to the same cents as the job does on a nightly run.
 */
const ONE_DAY_FLOOR_SQL = `
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
SELECT count(*)::integer AS facilities FROM accrued`;

/** One way of accruing the next day over every facility; answers facility-days accrued and batches. */
export type AccrualContender = (
  db: Database,
  day: string,
  onBatch: () => void,
) => Promise<{ days: number; batches: number }>;

export const floorContender: AccrualContender = async (db, day) => {
  const days = await db.transaction(async (tx) => {
    await tx.query(LOCK_FACILITY_BULK_UPDATES_SQL);
    return (await tx.query<{ facilities: number }>(ONE_DAY_FLOOR_SQL, { day: date(day) })).rows[0]!
      .facilities;
  });
  return { days, batches: 1 };
};

/** The job's credit service; `batchSize` undefined is the job's own batch size. */
export function jobContender(
  createService: typeof createCreditService,
  batchSize?: number,
): AccrualContender {
  return async (db, day, onBatch) => {
    const service = createService(db, {
      ...(batchSize === undefined ? {} : { batchSize }),
      afterBatch: async () => onBatch(),
    });
    const r = await service.accrueInterest(day, new AbortController().signal);
    return { days: r.daysAccrued, batches: r.batches };
  };
}

export interface AccrualRoundsResult {
  /** Seconds per contender, one entry per round. */
  seconds: Record<string, number[]>;
  batches: Record<string, number>;
  slowestBatchSeconds: Record<string, number>;
}

/**
 * Accrues one day after another over `facilities` facilities, each contender one day in turn, the order
 * rotating every round, every measurement after a VACUUM (as autovacuum would leave the tables between
 * nightly runs). Every contender's day is the day after the previous one's, so each accrues exactly one
 * day per facility on the same, growing history.
 */
export async function accrualRounds(
  server: BenchServer,
  contenders: Record<string, AccrualContender>,
  facilities: number,
  rounds: number,
): Promise<AccrualRoundsResult> {
  const names = Object.keys(contenders);
  const { db, drop } = await server.freshDatabase();
  try {
    const daysNeeded = 1 + rounds * names.length;
    const first = (
      await db.query<{ day: string }>(
        `SELECT CAST(CAST(now() AT TIME ZONE 'UTC' AS date) - CAST(:n AS integer) AS text) AS day`,
        { n: daysNeeded },
      )
    ).rows[0]!.day;
    const dayAfter = (day: string, n: number) =>
      new Date(Date.parse(`${day}T00:00:00Z`) + n * 86_400_000).toISOString().slice(0, 10);
    await db.query(
      `INSERT INTO credit_facilities (customer_email, facility_limit_cents, drawn_principal_cents, annual_rate, created_at)
       SELECT 'borrower' || g || '@example.com', 100000000, (g * 7919) % 100000000, 0.050000 + (g % 100) / 10000.0,
              CAST(:first AS date)::timestamp AT TIME ZONE 'UTC'
       FROM generate_series(1, :n) g`,
      { n: facilities, first: date(first) },
    );
    await db.query('VACUUM ANALYZE credit_facilities');
    // The opening day, unmeasured: every contender then finds history to continue from.
    await jobContender(createCreditService)(db, first, () => {});
    const result: AccrualRoundsResult = { seconds: {}, batches: {}, slowestBatchSeconds: {} };
    for (const name of names) {
      result.seconds[name] = [];
      result.slowestBatchSeconds[name] = 0;
    }
    let day = first;
    for (let round = 0; round < rounds; round++) {
      for (let k = 0; k < names.length; k++) {
        const name = names[(round + k) % names.length]!;
        day = dayAfter(day, 1);
        await db.query('VACUUM ANALYZE credit_facilities, interest_accruals');
        const start = performance.now();
        let batchStart = start;
        const r = await contenders[name]!(db, day, () => {
          const now = performance.now();
          result.slowestBatchSeconds[name] = Math.max(
            result.slowestBatchSeconds[name]!,
            (now - batchStart) / 1000,
          );
          batchStart = now;
        });
        result.seconds[name]!.push((performance.now() - start) / 1000);
        result.batches[name] = r.batches;
        if (r.days !== facilities) {
          throw new Error(
            `W4 ${name}: accrued ${r.days} facility-days on ${day} for ${facilities} facilities`,
          );
        }
      }
    }
    return result;
  } finally {
    await drop();
  }
}

/**
 * W4: interest accrual over 100,000 active facilities, one day at a time: the floor statement, the job's
 * code in one pass and in its batches, alternating, in one run (so the ratios, not this machine's absolute
 * speed, are the figures).
 */
export async function interestAccrual(
  server: BenchServer,
  facilities = 100_000,
  rounds = 5,
): Promise<AccrualBenchResult> {
  const r = await accrualRounds(
    server,
    {
      floor: floorContender,
      single: jobContender(createCreditService, facilities),
      batched: jobContender(createCreditService),
    },
    facilities,
    rounds,
  );
  const s = r.seconds as { floor: number[]; single: number[]; batched: number[] };
  const ratios = (a: number[], b: number[]) => +median(a.map((x, i) => x / b[i]!)).toFixed(2);
  const seconds = (xs: number[]) => +median(xs).toFixed(2);
  return {
    facilities,
    rounds,
    floorSeconds: seconds(s.floor),
    singlePassSeconds: seconds(s.single),
    batchedSeconds: seconds(s.batched),
    batches: r.batches.batched!,
    slowestBatchSeconds: +r.slowestBatchSeconds.batched!.toFixed(2),
    singleOverFloor: ratios(s.single, s.floor),
    batchedOverFloor: ratios(s.batched, s.floor),
    batchedOverSingle: ratios(s.batched, s.single),
  };
}
