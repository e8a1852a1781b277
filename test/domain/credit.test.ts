import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { castVote, createApprovalProcess } from '../../shared/domain/approvals.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { acceptedPrice, disbursalPolicy, domainHarness, insertFacility } from './support.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());
beforeEach(async () => {
  await t.db.query(
    'TRUNCATE jobs, job_executions, interest_accruals, notifications, disbursals, approval_votes, approval_processes, approval_policies, committee_members, committees, collateral_valuations, credit_facilities',
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

  test('a back-filled day accrues on the principal drawn that day, not on disbursals executed since', async () => {
    // 365.00 at 5 %: 5 cents a day; a disbursal today doubles the principal.
    const a = await insertFacility(t.db, {
      principalCents: 36_500n,
      rate: '0.050000',
      collateralSats: 100_000_000n,
    });
    await disbursalPolicy(t.db, ['chair']);
    await acceptedPrice(t.db, 10_000_000n);
    const { tracker, drain } = domainHarness(t.db);
    const processId = await createApprovalProcess(t.db, tracker, { facilityId: a, amountCents: 36_500n });
    // The deciding vote enqueues the approval, whose job disburses today.
    await castVote(t.db, tracker, { processId, voter: 'chair', approve: true });
    await drain();
    const today = new Date().toISOString().slice(0, 10);
    await tracker.enqueueMany([
      { type: 'interest-accrual', payload: { date: '2026-06-01' } },
      { type: 'interest-accrual', payload: { date: today } },
    ]);
    await drain();
    const rows = await t.db.query<{ accrual_date: string; principal_cents: bigint; interest_cents: bigint }>(
      'SELECT accrual_date, principal_cents, interest_cents FROM interest_accruals ORDER BY accrual_date',
    );
    expect(rows.rows).toEqual([
      { accrual_date: '2026-06-01', principal_cents: 36_500n, interest_cents: 5n },
      { accrual_date: today, principal_cents: 73_000n, interest_cents: 10n },
    ]);
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

  test('rounding is exact however large the amount: just below half a cent rounds down', async () => {
    // 366,125,000.01 at 999.9999 %: P·r/365 = 1,003,082,091.49999999726… cents. Numeric division would round
    // the quotient to 8 places (…91.50000000) and then up; the exact rule gives …091.
    const huge = await insertFacility(t.db, {
      principalCents: 36_612_500_001n,
      rate: '9.999999',
      limitCents: 100_000_000_000n,
    });
    // 0.01 at 1 %: 0.0000274 cents → 0; the facility still gets its (zero) row for the day.
    const tiny = await insertFacility(t.db, { principalCents: 1n, rate: '0.010000' });
    const { services } = domainHarness(t.db);
    const result = await services.credit.accrueDailyInterest('2026-06-01', new AbortController().signal);
    expect(result).toMatchObject({ facilitiesAccrued: 2, interestCents: 1_003_082_091n });
    expect(await accruals()).toEqual([
      { facility_id: tiny, accrual_date: '2026-06-01', interest_cents: 0n },
      { facility_id: huge, accrual_date: '2026-06-01', interest_cents: 1_003_082_091n },
    ]);
  });

  test('the day is a UTC day: a facility opened before its end accrues, one opened at midnight does not', async () => {
    const lateEvening = await insertFacility(t.db, {
      principalCents: 36_500n,
      rate: '0.100000',
      createdAt: '2026-06-01T23:59:59Z',
    });
    await insertFacility(t.db, {
      principalCents: 36_500n,
      rate: '0.100000',
      createdAt: '2026-06-02T00:00:00Z',
    });
    const { services } = domainHarness(t.db);
    await services.credit.accrueDailyInterest('2026-06-01', new AbortController().signal);
    expect(await accruals()).toEqual([
      { facility_id: lateEvening, accrual_date: '2026-06-01', interest_cents: 10n },
    ]);
  });

  test('10,000 facilities accrue in one statement, each to the exact cent', async () => {
    await t.db.query(
      `INSERT INTO credit_facilities (customer_email, facility_limit_cents, drawn_principal_cents, annual_rate, created_at)
       SELECT 'b' || g || '@example.com', 100000000, g * 7919, 0.050000 + (g % 97) / 10000.0, TIMESTAMPTZ '2020-01-01Z'
       FROM generate_series(1, 10000) g`,
    );
    const { services } = domainHarness(t.db);
    const result = await services.credit.accrueDailyInterest('2026-11-27', new AbortController().signal);
    expect(result).toMatchObject({ facilitiesAccrued: 10_000 });
    const rows = (
      await t.db.query<{ principal_cents: bigint; annual_rate: string; interest_cents: bigint }>(
        'SELECT principal_cents, annual_rate, interest_cents FROM interest_accruals',
      )
    ).rows;
    expect(rows).toHaveLength(10_000);
    // The oracle, in integer arithmetic: rate × 10^6 is an integer; half up = floor((2·P·r6 + D) / 2D).
    const expected = (principal: bigint, rate: string): bigint => {
      const rateMicros = BigInt(rate.replace('.', ''));
      expect(rate).toMatch(/^\d+\.\d{6}$/);
      return (2n * principal * rateMicros + 365_000_000n) / 730_000_000n;
    };
    const wrong = rows.filter((r) => r.interest_cents !== expected(r.principal_cents, r.annual_rate));
    expect(wrong).toEqual([]);
    const total = rows.reduce((sum, r) => sum + r.interest_cents, 0n);
    expect(result.interestCents).toBe(total);
  });

  test('accrual and valuation running at the same moment both finish (they take turns on the facilities)', async () => {
    await t.db.query(
      `INSERT INTO credit_facilities (customer_email, facility_limit_cents, drawn_principal_cents, annual_rate,
                                      collateral_sats, created_at)
       SELECT 'b' || g || '@example.com', 10000000, 36500, 0.100000, 1000000, TIMESTAMPTZ '2020-01-01Z'
       FROM generate_series(1, 5000) g`,
    );
    const { services } = domainHarness(t.db);
    const signal = new AbortController().signal;
    const results = await Promise.all([
      services.credit.accrueDailyInterest('2026-11-26', signal),
      services.portfolio.revalue(signal),
      services.credit.accrueDailyInterest('2026-11-27', signal),
      services.portfolio.revalue(signal),
    ]);
    expect(results).toMatchObject([
      { facilitiesAccrued: 5000, interestCents: 50_000n },
      { facilitiesValued: 5000 },
      { facilitiesAccrued: 5000, interestCents: 50_000n },
      { facilitiesValued: 5000 },
    ]);
    const balances = await t.db.query<{ accrued: bigint; valued: number }>(
      `SELECT sum(accrued_interest_cents)::bigint AS accrued, count(valued_at)::int AS valued FROM credit_facilities`,
    );
    expect(balances.rows[0]).toEqual({ accrued: 100_000n, valued: 5000 });
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
