import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { runCli } from '../../shared/cli/main.js';
import { castVote, createApprovalProcess } from '../../shared/domain/approvals.js';
import { createCreditService } from '../../shared/domain/credit.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { acceptedPrice, disbursalPolicy, domainHarness, insertFacility } from './support.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());
beforeEach(async () => {
  await t.db.query(
    'TRUNCATE jobs, job_execution_records, interest_accruals, notifications, disbursals, approval_votes, approval_processes, approval_policies, committee_members, committees, collateral_transitions, collateral_valuations, credit_facilities CASCADE',
  );
});

/** Facilities in these tests open on 2026-06-01 (UTC) unless a test says otherwise. */
const facility = (f: Parameters<typeof insertFacility>[1]) =>
  insertFacility(t.db, { createdAt: '2026-06-01T00:00:00Z', ...f });

const accruals = async () =>
  (
    await t.db.query<{ facility_id: string; accrual_date: string; interest_cents: bigint }>(
      'SELECT facility_id, accrual_date, interest_cents FROM interest_accruals ORDER BY interest_cents',
    )
  ).rows;

describe('interest accrual', () => {
  test('a first day accrues principal × rate / 365 rounded half up to the cent, one row per facility per day', async () => {
    // 1,000,000.00 at 10 %: 100,000,000 × 0.1 / 365 = 27,397.26… cents → 27,397
    const a = await facility({ principalCents: 100_000_000n, rate: '0.100000' });
    // 365.00 at 5 %: 36,500 × 0.05 / 365 = 5.0 cents exactly
    const b = await facility({ principalCents: 36_500n, rate: '0.050000' });
    // 73.00 at 12.5 %: 7,300 × 0.125 / 365 = 2.5 cents → rounds half up to 3
    const c = await facility({ principalCents: 7_300n, rate: '0.125000' });
    // nothing drawn: a zero row, no balance change
    const d = await facility({ principalCents: 0n, rate: '0.200000' });
    // closed, and opened after the day: no row
    await facility({ principalCents: 5_000_000n, rate: '0.100000', status: 'closed' });
    await facility({
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

  test('each day accrues on the principal drawn at its end, not on disbursals executed since', async () => {
    // 365.00 at 5 %: 5 cents a day; a disbursal on 2 June doubles the principal.
    const a = await facility({
      principalCents: 36_500n,
      rate: '0.050000',
      collateralSats: 100_000_000n,
    });
    await disbursalPolicy(t.db, ['chair']);
    await acceptedPrice(t.db, 10_000_000n);
    const { tracker, drain } = domainHarness(t.db);
    const processId = await createApprovalProcess(t.db, tracker, { facilityId: a, amountCents: 36_500n });
    // The deciding vote enqueues the approval, whose job disburses.
    await castVote(t.db, tracker, { processId, voter: 'chair', approve: true });
    await drain();
    await t.db.query("UPDATE disbursals SET executed_at = '2026-06-02T12:00:00Z'");
    await tracker.enqueue({ type: 'interest-accrual', payload: { date: '2026-06-03' } });
    await drain();
    const rows = await t.db.query<{ accrual_date: string; principal_cents: bigint; interest_cents: bigint }>(
      'SELECT accrual_date, principal_cents, interest_cents FROM interest_accruals ORDER BY accrual_date',
    );
    expect(rows.rows).toEqual([
      { accrual_date: '2026-06-01', principal_cents: 36_500n, interest_cents: 5n },
      { accrual_date: '2026-06-02', principal_cents: 73_000n, interest_cents: 10n },
      { accrual_date: '2026-06-03', principal_cents: 73_000n, interest_cents: 10n },
    ]);
  });

  test('a duplicate tick, a second job or a retry for the same day accrues nothing twice', async () => {
    const a = await facility({ principalCents: 100_000_000n, rate: '0.100000' });
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
    const huge = await facility({
      principalCents: 36_612_500_001n,
      rate: '9.999999',
      limitCents: 100_000_000_000n,
    });
    // 0.01 at 1 %: 0.0000274 cents → 0; the facility still gets its (zero) row for the day.
    const tiny = await facility({ principalCents: 1n, rate: '0.010000' });
    const { services } = domainHarness(t.db);
    const result = await services.credit.accrueDailyInterest('2026-06-01', new AbortController().signal);
    expect(result).toMatchObject({ facilitiesAccrued: 2, interestCents: 1_003_082_091n });
    expect(await accruals()).toEqual([
      { facility_id: tiny, accrual_date: '2026-06-01', interest_cents: 0n },
      { facility_id: huge, accrual_date: '2026-06-01', interest_cents: 1_003_082_091n },
    ]);
  });

  test('the day is a UTC day: a facility opened before its end accrues, one opened at midnight does not', async () => {
    const lateEvening = await facility({
      principalCents: 36_500n,
      rate: '0.100000',
      createdAt: '2026-06-01T23:59:59Z',
    });
    await facility({
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

  test('10,000 facilities accrue, each to the exact cent', async () => {
    await t.db.query(
      `INSERT INTO credit_facilities (customer_email, facility_limit_cents, drawn_principal_cents, annual_rate, created_at)
       SELECT 'b' || g || '@example.com', 100000000, g * 7919, 0.050000 + (g % 97) / 10000.0, TIMESTAMPTZ '2026-11-27Z'
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
       SELECT 'b' || g || '@example.com', 10000000, 36500, 0.100000, 1000000, TIMESTAMPTZ '2026-11-26Z'
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
    // Whichever accrual runs first catches up what the other would have done: two days in all.
    const accrued = [results[0], results[2]] as { daysAccrued: number; interestCents: bigint }[];
    expect(accrued.reduce((n, r) => n + r.daysAccrued, 0)).toBe(10_000);
    expect(accrued.reduce((n, r) => n + r.interestCents, 0n)).toBe(100_000n);
    expect(results[1]).toMatchObject({ facilitiesValued: 5000 });
    expect(results[3]).toMatchObject({ facilitiesValued: 5000 });
    const balances = await t.db.query<{ accrued: bigint; valued: number }>(
      `SELECT sum(accrued_interest_cents)::bigint AS accrued, count(valued_at)::int AS valued FROM credit_facilities`,
    );
    expect(balances.rows[0]).toEqual({ accrued: 100_000n, valued: 5000 });
  });

  test('a malformed, future, unended or impossible date is refused at enqueue (CLI exit 2) and nothing is written', async () => {
    const { tracker } = domainHarness(t.db);
    const today = new Date().toISOString().slice(0, 10);
    const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
    for (const [day, message] of [
      ['2026-02-30', /payload\.date: not a calendar date/],
      [today, /has not ended yet/],
      [tomorrow, /has not ended yet/],
      ['2999-01-01', /has not ended yet/],
      ['0000-01-01', /must be from 2000-01-01 to 2099-12-31/],
    ] as const) {
      await expect(
        tracker.enqueueUntyped([{ type: 'interest-accrual', payload: { date: day } }]),
      ).rejects.toThrow(message);
      const out = new PassThrough();
      const err = new PassThrough();
      let stderr = '';
      err.on('data', (c: Buffer) => {
        stderr += c.toString();
      });
      const code = await runCli(
        ['enqueue', 'interest-accrual', '--payload', JSON.stringify({ date: day }), '--database-url', t.url],
        { stdout: out, stderr: err },
      );
      expect(code, stderr).toBe(2);
      expect(stderr).toMatch(message);
    }
    expect((await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs')).rows[0]!.n).toBe(0);
  });

  test('catches up: a missed week is healed by the next run, up to yesterday by the database clock, never today', async () => {
    const a = await facility({ principalCents: 36_500n, rate: '0.100000' });
    const { tracker, drain } = domainHarness(t.db);
    await tracker.enqueue({ type: 'interest-accrual', payload: { date: '2026-06-02' } });
    await drain();
    expect((await accruals()).map((r) => r.accrual_date)).toEqual(['2026-06-01', '2026-06-02']);
    // A week of missed midnights, then the nightly job (no date) runs.
    await tracker.enqueue({ type: 'interest-accrual', payload: {} });
    await drain();
    const span = await t.db.query<{
      expected: number;
      got: number;
      last: string;
      balance: bigint;
      sum: bigint;
    }>(
      `SELECT (CAST(now() AT TIME ZONE 'UTC' AS date) - 1) - DATE '2026-06-01' + 1 AS expected,
              (SELECT count(*)::int FROM interest_accruals) AS got,
              (SELECT CAST(max(accrual_date) AS text) FROM interest_accruals) AS last,
              (SELECT accrued_interest_cents FROM credit_facilities) AS balance,
              (SELECT sum(interest_cents)::bigint FROM interest_accruals) AS sum`,
    );
    const r = span.rows[0]!;
    expect(r.got).toBe(r.expected);
    expect(r.last).toBe(new Date(Date.now() - 86_400_000).toISOString().slice(0, 10));
    expect(r.balance).toBe(r.sum);
    expect(r.balance).toBe(10n * BigInt(r.expected));
    // A hole (a day lost before this release) is not re-created, and a re-run adds nothing.
    const { services } = domainHarness(t.db);
    const again = await services.credit.accrueInterest(undefined, new AbortController().signal);
    expect(again).toMatchObject({ daysAccrued: 0, interestCents: 0n });
    expect(a).toBeTruthy();
  });

  test('facility history: a closed facility accrues the days it was open; accrual stops at maturity', async () => {
    const closed = await facility({ principalCents: 36_500n, rate: '0.100000' });
    const matured = await facility({ principalCents: 36_500n, rate: '0.100000' });
    await t.db.query("UPDATE credit_facilities SET status = 'closed' WHERE id = CAST(:id AS uuid)", {
      id: closed,
    });
    // Closed at 10:00 on 3 June: 1, 2 and 3 June accrue.
    await t.db.query(
      "UPDATE credit_facilities SET closed_at = '2026-06-03T10:00:00Z' WHERE id = CAST(:id AS uuid)",
      { id: closed },
    );
    // Matures on 3 June: 1 and 2 June accrue.
    await t.db.query(
      "UPDATE credit_facilities SET maturity_date = '2026-06-03' WHERE id = CAST(:id AS uuid)",
      {
        id: matured,
      },
    );
    const { services } = domainHarness(t.db);
    await services.credit.accrueInterest('2026-06-10', new AbortController().signal);
    const days = await t.db.query<{ facility_id: string; days: string }>(
      `SELECT facility_id, string_agg(CAST(accrual_date AS text), ',' ORDER BY accrual_date) AS days
       FROM interest_accruals GROUP BY facility_id`,
    );
    expect(Object.fromEntries(days.rows.map((r) => [r.facility_id, r.days]))).toEqual({
      [closed]: '2026-06-01,2026-06-02,2026-06-03',
      [matured]: '2026-06-01,2026-06-02',
    });
  });

  test('catch-up over facilities at different points: each day on the principal drawn at its end', async () => {
    /** A disbursal executed at `at`: the facility's drawn principal already includes it. */
    const disbursed = async (facilityId: string, amountCents: bigint, at: string) => {
      const process = await t.db.query<{ id: string }>(
        `INSERT INTO approval_processes (facility_id, amount_cents, committee_size, required_approvals, status)
         VALUES (CAST(:facility AS uuid), :amount, 0, 0, 'approved') RETURNING id`,
        { facility: facilityId, amount: amountCents },
      );
      await t.db.query(
        `INSERT INTO disbursals (process_id, facility_id, amount_cents, executed_at)
         VALUES (CAST(:process AS uuid), CAST(:facility AS uuid), :amount, CAST(:at AS timestamptz))`,
        { process: process.rows[0]!.id, facility: facilityId, amount: amountCents, at },
      );
    };
    // 730.00 drawn at 5 %: 10 cents a day; 365.00 (5 cents a day) before each one's disbursal.
    const early = await facility({ principalCents: 73_000n, rate: '0.050000' });
    await disbursed(early, 36_500n, '2026-06-03T12:00:00Z');
    const { services } = domainHarness(t.db);
    const signal = new AbortController().signal;
    await services.credit.accrueInterest('2026-06-04', signal);
    // Opened on 1 June but recorded only now: six days behind the other, its disbursal on 2 June.
    const late = await facility({ principalCents: 73_000n, rate: '0.050000' });
    await disbursed(late, 36_500n, '2026-06-02T12:00:00Z');
    const result = await services.credit.accrueInterest('2026-06-06', signal);
    expect(result).toMatchObject({ facilitiesAccrued: 2, daysAccrued: 8, interestCents: 75n });
    const days = await t.db.query<{ facility_id: string; days: string }>(
      `SELECT facility_id, string_agg(CAST(accrual_date AS text) || '=' || principal_cents || '/' || interest_cents,
                                      ',' ORDER BY accrual_date) AS days
       FROM interest_accruals GROUP BY facility_id`,
    );
    expect(Object.fromEntries(days.rows.map((r) => [r.facility_id, r.days]))).toEqual({
      [early]:
        '2026-06-01=36500/5,2026-06-02=36500/5,2026-06-03=73000/10,2026-06-04=73000/10,2026-06-05=73000/10,2026-06-06=73000/10',
      [late]:
        '2026-06-01=36500/5,2026-06-02=73000/10,2026-06-03=73000/10,2026-06-04=73000/10,2026-06-05=73000/10,2026-06-06=73000/10',
    });
    const balances = await t.db.query<{ id: string; accrued_interest_cents: bigint }>(
      'SELECT id, accrued_interest_cents FROM credit_facilities',
    );
    expect(Object.fromEntries(balances.rows.map((r) => [r.id, r.accrued_interest_cents]))).toEqual({
      [early]: 50n,
      [late]: 55n,
    });
  });

  test('batched accrual gives the single pass its exact cents, and a crash between batches is healed by the re-run', async () => {
    await t.db.query(
      `INSERT INTO credit_facilities (customer_email, facility_limit_cents, drawn_principal_cents, annual_rate, created_at)
       SELECT 'b' || g || '@example.com', 100000000, g * 7919, 0.050000 + (g % 97) / 10000.0,
              TIMESTAMPTZ '2026-06-01Z' + (g % 3) * interval '1 day'
       FROM generate_series(1, 500) g`,
    );
    const signal = new AbortController().signal;
    const snapshot = async () =>
      (
        await t.db.query<{ facility_id: string; accrual_date: string; interest_cents: bigint }>(
          'SELECT facility_id, CAST(accrual_date AS text) AS accrual_date, interest_cents FROM interest_accruals ORDER BY 1, 2',
        )
      ).rows;
    const single = await createCreditService(t.db, { batchSize: 1_000_000 }).accrueInterest(
      '2026-06-05',
      signal,
    );
    expect(single.batches).toBe(1);
    const singleRows = await snapshot();
    const singleBalances = (
      await t.db.query('SELECT id, accrued_interest_cents FROM credit_facilities ORDER BY id')
    ).rows;
    await t.db.query('TRUNCATE interest_accruals');
    await t.db.query('UPDATE credit_facilities SET accrued_interest_cents = 0, accrued_interest_basis = 0');
    // Batches of 37 facilities; the process dies after the third batch.
    const crashing = createCreditService(t.db, {
      batchSize: 37,
      afterBatch: async (n) => {
        if (n === 3) throw new Error('Lambda timed out');
      },
    });
    await expect(crashing.accrueInterest('2026-06-05', signal)).rejects.toThrow(/timed out/);
    expect((await snapshot()).length).toBeGreaterThan(0);
    expect((await snapshot()).length).toBeLessThan(singleRows.length);
    const rerun = await createCreditService(t.db, { batchSize: 37 }).accrueInterest('2026-06-05', signal);
    expect(rerun.batches).toBe(Math.ceil(500 / 37));
    expect(await snapshot()).toEqual(singleRows);
    expect(
      (await t.db.query('SELECT id, accrued_interest_cents FROM credit_facilities ORDER BY id')).rows,
    ).toEqual(singleBalances);
    expect(singleRows.reduce((n, r) => n + r.interest_cents, 0n)).toBe(single.interestCents);
  });
});
