import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { domainHarness, insertFacility } from './support.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());
beforeEach(async () => {
  await t.db.query(
    'TRUNCATE jobs, job_executions, interest_accruals, notifications, disbursals, approval_votes, approval_processes, collateral_valuations, credit_facilities',
  );
});

const accruals = async () =>
  (
    await t.db.query<{ facility_id: string; accrual_date: string; interest_cents: bigint }>(
      'SELECT facility_id, accrual_date, interest_cents FROM interest_accruals ORDER BY interest_cents',
    )
  ).rows;

describe('interest accrual', () => {
  test('daily interest = principal × rate / 365, rounded half up to the cent, once per facility per day', async () => {
    // 1,000,000.00 at 10 %: 100,000,000 × 0.1 / 365 = 27,397.26… cents → 27,397
    const a = await insertFacility(t.db, { principalCents: 100_000_000n, rate: '0.100000' });
    // 365.00 at 5 %: 36,500 × 0.05 / 365 = 5.0 cents exactly
    const b = await insertFacility(t.db, { principalCents: 36_500n, rate: '0.050000' });
    // 73.00 at 12.5 %: 7,300 × 0.125 / 365 = 2.5 cents → rounds half up to 3
    const c = await insertFacility(t.db, { principalCents: 7_300n, rate: '0.125000' });
    // nothing drawn: a zero row, no balance change
    const d = await insertFacility(t.db, { principalCents: 0n, rate: '0.200000' });
    // closed, and opened after the day: no row
    await insertFacility(t.db, { principalCents: 5_000_000n, rate: '0.100000', status: 'closed' });
    await insertFacility(t.db, {
      principalCents: 5_000_000n,
      rate: '0.100000',
      createdAt: '2026-06-02T08:00:00Z',
    });

    const { tracker, drain } = domainHarness(t.db);
    await tracker.enqueue({ type: 'interest-accrual', payload: { date: '2026-06-01' } });
    await drain();
    expect(await accruals()).toEqual([
      { facility_id: d, accrual_date: '2026-06-01', interest_cents: 0n },
      { facility_id: c, accrual_date: '2026-06-01', interest_cents: 3n },
      { facility_id: b, accrual_date: '2026-06-01', interest_cents: 5n },
      { facility_id: a, accrual_date: '2026-06-01', interest_cents: 27_397n },
    ]);
    const balance = await t.db.query<{ accrued_interest_cents: bigint }>(
      'SELECT accrued_interest_cents FROM credit_facilities WHERE id = CAST(:id AS uuid)',
      { id: a },
    );
    expect(balance.rows[0]!.accrued_interest_cents).toBe(27_397n);
  });

  test('a duplicate tick, a second job or a retry for the same day accrues nothing twice', async () => {
    const a = await insertFacility(t.db, { principalCents: 100_000_000n, rate: '0.100000' });
    const { tracker, drain, services } = domainHarness(t.db);
    await tracker.enqueueMany([
      { type: 'interest-accrual', payload: { date: '2026-06-01' } },
      { type: 'interest-accrual', payload: { date: '2026-06-01' } },
    ]);
    await drain();
    // A retry after a partial run: the same call again.
    await services.credit.accrueDailyInterest('2026-06-01', new AbortController().signal);
    expect(await accruals()).toHaveLength(1);
    const balance = await t.db.query<{ accrued_interest_cents: bigint }>(
      'SELECT accrued_interest_cents FROM credit_facilities WHERE id = CAST(:id AS uuid)',
      { id: a },
    );
    expect(balance.rows[0]!.accrued_interest_cents).toBe(27_397n);
    // The next day accrues again.
    await tracker.enqueue({ type: 'interest-accrual', payload: { date: '2026-06-02' } });
    await drain();
    expect(await accruals()).toHaveLength(2);
  });

  test('10,000 facilities accrue in one statement', async () => {
    await t.db.query(
      `INSERT INTO credit_facilities (customer_email, facility_limit_cents, drawn_principal_cents, annual_rate, created_at)
       SELECT 'b' || g || '@example.com', 10000000, g * 100, 0.090000, now() - interval '1 day'
       FROM generate_series(1, 10000) g`,
    );
    const { services } = domainHarness(t.db);
    const result = await services.credit.accrueDailyInterest('2026-11-27', new AbortController().signal);
    expect(result).toMatchObject({ facilitiesAccrued: 10_000 });
    const check = await t.db.query<{ rows: number; wrong: number }>(
      `SELECT count(*)::int AS rows,
              count(*) FILTER (WHERE interest_cents <> round(principal_cents * annual_rate / 365))::int AS wrong
       FROM interest_accruals`,
    );
    expect(check.rows[0]).toEqual({ rows: 10_000, wrong: 0 });
  });

  test('a malformed date is rejected at enqueue and nothing is written', async () => {
    const { tracker } = domainHarness(t.db);
    await expect(
      tracker.enqueueUntyped([{ type: 'interest-accrual', payload: { date: '2026-02-30' } }]),
    ).rejects.toThrow(/payload\.date: not a calendar date/);
    const jobs = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs');
    expect(jobs.rows[0]!.n).toBe(0);
  });
});
