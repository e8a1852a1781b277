import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { runCli } from '../../shared/cli/main.js';
import {
  castVote,
  createApprovalProcess,
  listObligations,
  recordRepayment,
} from '../../shared/domain/index.js';
import { dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import {
  acceptedPrice,
  disbursalPolicy,
  domainHarness,
  insertFacility,
  insertObligation,
} from './support.js';

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

const signal = () => new AbortController().signal;
const one = async <T extends Record<string, unknown>>(sql: string, params = {}) =>
  (await t.db.query<T>(sql, params)).rows[0]!;
const count = async (table: string) =>
  (await one<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)).n;
const facilityRow = (id: string) =>
  one<{
    drawn_principal_cents: bigint;
    accrued_interest_cents: bigint;
    next_payment_due: string | null;
    interest_posted_through: string | null;
  }>(
    `SELECT drawn_principal_cents, accrued_interest_cents, CAST(next_payment_due AS text) AS next_payment_due,
            CAST(interest_posted_through AS text) AS interest_posted_through
     FROM credit_facilities WHERE id = CAST(:id AS uuid)`,
    { id },
  );

/** Runs the CLI against the test database; answers the exit code and what it printed. */
async function cli(args: string[]) {
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = '';
  let stderr = '';
  out.on('data', (c: Buffer) => {
    stdout += c.toString();
  });
  err.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const code = await runCli([...args, '--database-url', t.url], { stdout: out, stderr: err });
  return { code, stdout, stderr };
}

/** 36,500.00 at 10 %: exactly 10.00 a day. */
const TEN_A_DAY = { principalCents: 3_650_000n, rate: '0.100000' };

describe('obligations', () => {
  test('each monthly cycle posts as an interest obligation with due, overdue and defaulted dates', async () => {
    const f = await insertFacility(t.db, { ...TEN_A_DAY, createdAt: '2026-05-01T09:00:00Z' });
    const { services } = domainHarness(t.db);
    const june15 = await services.credit.accrueInterest('2026-06-15', signal());
    expect(june15.obligationsPosted).toBe(1);
    expect(await listObligations(t.db, f)).toEqual([
      expect.objectContaining({
        kind: 'interest',
        periodStart: '2026-05-01',
        periodEnd: '2026-05-31',
        amountCents: 31_000n,
        outstandingCents: 31_000n,
        dueDate: '2026-06-10',
        overdueDate: '2026-06-17',
        defaultedDate: '2026-09-08',
        // Today is long after: unpaid, it is defaulted.
        status: 'defaulted',
      }),
    ]);
    // The payment due comes from the obligations; June is still accruing (150.00 of it so far).
    expect(await facilityRow(f)).toEqual({
      drawn_principal_cents: 3_650_000n,
      accrued_interest_cents: 46_000n,
      next_payment_due: '2026-06-10',
      interest_posted_through: '2026-05-31',
    });
    // A re-run posts nothing again; the end of June posts June.
    expect((await services.credit.accrueInterest('2026-06-15', signal())).obligationsPosted).toBe(0);
    expect((await services.credit.accrueInterest('2026-07-02', signal())).obligationsPosted).toBe(1);
    expect((await listObligations(t.db, f)).map((o) => [o.periodEnd, o.amountCents, o.dueDate])).toEqual([
      ['2026-05-31', 31_000n, '2026-06-10'],
      ['2026-06-30', 30_000n, '2026-07-10'],
    ]);
  });

  test('a catch-up over several months posts the latest three cycles, the first with all before it; the last ends before maturity', async () => {
    const f = await insertFacility(t.db, {
      ...TEN_A_DAY,
      createdAt: '2026-03-15T00:00:00Z',
      maturityDate: '2026-06-11',
    });
    const { services } = domainHarness(t.db);
    const r = await services.credit.accrueInterest('2026-08-01', signal());
    expect(r.obligationsPosted).toBe(3);
    expect((await listObligations(t.db, f)).map((o) => [o.periodStart, o.periodEnd, o.amountCents])).toEqual([
      ['2026-03-15', '2026-04-30', 47_000n],
      ['2026-05-01', '2026-05-31', 31_000n],
      ['2026-06-01', '2026-06-10', 10_000n],
    ]);
    expect((await facilityRow(f)).accrued_interest_cents).toBe(88_000n);
  });

  test('principal becomes an obligation due at maturity, created by the sweep before it falls due', async () => {
    const f = await insertFacility(t.db, { principalCents: 500_000n, rate: '0', maturityDate: '2026-11-20' });
    const { services } = domainHarness(t.db);
    const early = await services.reminders.enqueueDueReminders('2026-11-10', signal());
    expect(early).toMatchObject({ principalObligations: 0, enqueued: 0 });
    const sweep = await services.reminders.enqueueDueReminders('2026-11-17', signal());
    expect(sweep).toMatchObject({ principalObligations: 1, enqueued: 1 });
    expect(await listObligations(t.db, f)).toEqual([
      expect.objectContaining({
        kind: 'principal',
        amountCents: 500_000n,
        dueDate: '2026-11-20',
        overdueDate: '2026-11-27',
        defaultedDate: '2027-02-18',
      }),
    ]);
    expect((await facilityRow(f)).next_payment_due).toBe('2026-11-20');
    // Swept again: the principal is covered, nothing new.
    expect(await services.reminders.enqueueDueReminders('2026-11-18', signal())).toMatchObject({
      principalObligations: 0,
    });
    expect(await count('obligations')).toBe(1);
  });

  test('a repayment settles obligations oldest first: interest lowers the interest balance, principal the drawn principal', async () => {
    const f = await insertFacility(t.db, { principalCents: 1_000_000n, rate: '0.1' });
    const may = await insertObligation(t.db, { facilityId: f, amountCents: 31_000n, dueDate: '2026-06-10' });
    const principal = await insertObligation(t.db, {
      facilityId: f,
      kind: 'principal',
      amountCents: 1_000_000n,
      dueDate: '2026-07-01',
    });
    const june = await insertObligation(t.db, { facilityId: f, amountCents: 30_000n, dueDate: '2026-07-10' });
    const first = await recordRepayment(t.db, { facilityId: f, amountCents: 40_000n });
    expect(first).toMatchObject({
      recorded: true,
      allocations: [
        { obligationId: may, kind: 'interest', amountCents: 31_000n },
        { obligationId: principal, kind: 'principal', amountCents: 9_000n },
      ],
      interestPaidCents: 31_000n,
      principalPaidCents: 9_000n,
      outstandingCents: 1_021_000n,
      nextPaymentDue: '2026-07-01',
    });
    expect(await facilityRow(f)).toMatchObject({
      drawn_principal_cents: 991_000n,
      accrued_interest_cents: 30_000n,
      next_payment_due: '2026-07-01',
    });
    const byId = Object.fromEntries((await listObligations(t.db, f)).map((o) => [o.id, o]));
    expect(byId[may]).toMatchObject({ status: 'paid', outstandingCents: 0n });
    expect(byId[principal]).toMatchObject({ paidCents: 9_000n, outstandingCents: 991_000n });
    expect(byId[june]).toMatchObject({ paidCents: 0n });
    // The rest, in full: nothing is owed and no payment is due.
    expect(await recordRepayment(t.db, { facilityId: f, amountCents: 1_021_000n })).toMatchObject({
      outstandingCents: 0n,
      nextPaymentDue: null,
    });
    expect(await facilityRow(f)).toMatchObject({
      drawn_principal_cents: 0n,
      accrued_interest_cents: 0n,
      next_payment_due: null,
    });
  });

  test('a refused repayment writes nothing: overpayment, nothing owed, unknown facility, zero; a reference repeats harmlessly', async () => {
    const f = await insertFacility(t.db, { principalCents: 100_000n, rate: '0.1' });
    const bare = await insertFacility(t.db, { principalCents: 100_000n, rate: '0.1' });
    await insertObligation(t.db, { facilityId: f, amountCents: 5_000n, dueDate: '2026-06-10' });
    await expect(recordRepayment(t.db, { facilityId: f, amountCents: 5_001n })).rejects.toMatchObject({
      code: 'overpayment',
    });
    await expect(recordRepayment(t.db, { facilityId: bare, amountCents: 1n })).rejects.toMatchObject({
      code: 'nothing_owed',
    });
    await expect(
      recordRepayment(t.db, { facilityId: '00000000-0000-4000-8000-000000000009', amountCents: 1n }),
    ).rejects.toMatchObject({ code: 'facility_not_found' });
    await expect(recordRepayment(t.db, { facilityId: f, amountCents: 0n })).rejects.toMatchObject({
      code: 'invalid_amount',
    });
    expect(await count('payments')).toBe(0);
    expect(await one('SELECT paid_cents FROM obligations')).toEqual({ paid_cents: 0n });
    const paid = await recordRepayment(t.db, { facilityId: f, amountCents: 2_000n, reference: 'wire-77' });
    const again = await recordRepayment(t.db, { facilityId: f, amountCents: 2_000n, reference: 'wire-77' });
    expect(again).toMatchObject({ recorded: false, paymentId: paid.paymentId, outstandingCents: 3_000n });
    expect(await one('SELECT paid_cents FROM obligations')).toEqual({ paid_cents: 2_000n });
  });

  test('the repay command settles obligations; bad input exits 2 with one line and writes nothing', async () => {
    const f = await insertFacility(t.db, { principalCents: 100_000n, rate: '0.1' });
    await insertObligation(t.db, { facilityId: f, amountCents: 5_000n, dueDate: '2026-06-10' });
    for (const [args, message] of [
      [['repay', f, '--amount', '-5'], /--amount must be US dollars/],
      [['repay', f, '--amount', '1.005'], /--amount must be US dollars/],
      [['repay', f, '--amount', '0'], /more than 0/],
      [['repay', f], /--amount is required/],
      [['repay', 'not-a-uuid', '--amount', '1'], /not a facility id/],
      [['repay', f, '--amount', '50.01'], /more than the 50.00 facility .* owes/],
      [['repay', '00000000-0000-4000-8000-000000000009', '--amount', '1'], /no credit facility/],
    ] as const) {
      const r = await cli([...args]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    expect(await count('payments')).toBe(0);
    const ok = await cli(['repay', f, '--amount', '20.5']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/paid USD 20.50 on facility/);
    expect(ok.stdout).toMatch(/still owed on obligations: USD 29.50; next payment due: 2026-06-10/);
    expect(await one('SELECT paid_cents FROM obligations')).toEqual({ paid_cents: 2_050n });
  });
});

test('through the RDS Data API driver: a cycle posts, the sweep reminds with the amount, a repayment settles', async () => {
  const fixture = await startDataApiFixture(t.url);
  const db = dataApiDriverOver(fixture, t.name);
  try {
    const f = await insertFacility(t.db, { ...TEN_A_DAY, createdAt: '2026-05-01T00:00:00Z' });
    const { services, notifications, drain } = domainHarness(db);
    expect(await services.credit.accrueInterest('2026-06-01', signal())).toMatchObject({
      daysAccrued: 32,
      obligationsPosted: 1,
    });
    expect(await services.reminders.enqueueDueReminders('2026-06-08', signal())).toMatchObject({
      enqueued: 1,
    });
    await drain();
    expect(notifications.sent.map((m) => m.subject)).toEqual(['Payment reminder: USD 310.00 due 2026-06-10']);
    expect(
      await recordRepayment(db, { facilityId: f, amountCents: 31_000n, reference: 'r-1' }),
    ).toMatchObject({
      interestPaidCents: 31_000n,
      outstandingCents: 0n,
      nextPaymentDue: null,
    });
    expect(await listObligations(db, f)).toEqual([expect.objectContaining({ status: 'paid' })]);
  } finally {
    await db.close();
    await fixture.close();
  }
});

describe('reminders and overdue notices', () => {
  test('a settled obligation is never reminded: paid before the sweep, or between the sweep and the send', async () => {
    const paidEarly = await insertFacility(t.db, {
      principalCents: 100n,
      rate: '0.1',
      nextPaymentDue: '2026-12-04',
      email: 'early@example.com',
    });
    const paidLate = await insertFacility(t.db, {
      principalCents: 100n,
      rate: '0.1',
      nextPaymentDue: '2026-12-04',
      email: 'late@example.com',
    });
    await recordRepayment(t.db, { facilityId: paidEarly, amountCents: 1_000n });
    const { tracker, drain, notifications, services } = domainHarness(t.db);
    await tracker.enqueue({ type: 'payment-reminders', payload: { date: '2026-12-01' } });
    // Run the sweep only; the reminder it enqueued waits.
    await services.reminders.enqueueDueReminders('2026-12-01', signal());
    const queued = await t.db.query<{ facility: string }>(
      "SELECT payload->>'facilityId' AS facility FROM jobs WHERE job_type = 'notification'",
    );
    expect(queued.rows).toEqual([{ facility: paidLate }]);
    await recordRepayment(t.db, { facilityId: paidLate, amountCents: 1_000n });
    await drain();
    expect(notifications.sent).toEqual([]);
    expect(await count('notifications')).toBe(0);
    expect(
      await services.notifications.send(
        { kind: 'payment-reminder', facilityId: paidLate, dueDate: '2026-12-04' },
        signal(),
      ),
    ).toMatchObject({ outcome: 'skipped_settled' });
  });

  test('a partly paid obligation is reminded of what is left', async () => {
    const f = await insertFacility(t.db, {
      principalCents: 100n,
      rate: '0.1',
      nextPaymentDue: '2026-12-04',
      dueCents: 500_00n,
    });
    await recordRepayment(t.db, { facilityId: f, amountCents: 120_00n });
    const { tracker, drain, notifications } = domainHarness(t.db);
    await tracker.enqueue({ type: 'payment-reminders', payload: { date: '2026-12-02' } });
    await drain();
    expect(notifications.sent.map((m) => m.subject)).toEqual(['Payment reminder: USD 380.00 due 2026-12-04']);
  });

  test('an obligation going overdue sends its notice once, from the daily sweep; a settled one sends none', async () => {
    const late = await insertFacility(t.db, {
      principalCents: 100n,
      rate: '0.1',
      nextPaymentDue: '2026-11-20',
      dueCents: 75_00n,
      email: 'late@example.com',
    });
    const settled = await insertFacility(t.db, {
      principalCents: 100n,
      rate: '0.1',
      nextPaymentDue: '2026-11-20',
      email: 'settled@example.com',
    });
    await recordRepayment(t.db, { facilityId: settled, amountCents: 1_000n });
    const { tracker, drain, notifications } = domainHarness(t.db);
    // Due on the 20th, overdue from the 27th.
    await tracker.enqueue({ type: 'payment-reminders', payload: { date: '2026-11-26' } });
    await drain();
    expect(notifications.sent).toEqual([]);
    await tracker.enqueueMany([
      { type: 'payment-reminders', payload: { date: '2026-11-27' } },
      { type: 'payment-reminders', payload: { date: '2026-11-28' } },
    ]);
    await drain();
    expect(notifications.sent.map((m) => [m.to, m.subject])).toEqual([
      ['late@example.com', 'Payment overdue: USD 75.00 was due 2026-11-20'],
    ]);
    expect(notifications.sent[0]!.body).toMatch(/unpaid on 2027-02-18, it is in default/);
    expect(
      await one('SELECT facility_id, kind, CAST(key_date AS text) AS key_date FROM notifications'),
    ).toEqual({
      facility_id: late,
      kind: 'obligation-overdue',
      key_date: '2026-11-20',
    });
  });

  test('a sweep for a day that has not begun is refused at enqueue (CLI exit 2) and by the service; nothing written', async () => {
    const { tracker, services } = domainHarness(t.db);
    await insertFacility(t.db, { principalCents: 100n, rate: '0.1', nextPaymentDue: '2026-12-20' });
    const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
    const inEighteenDays = new Date(Date.now() + 18 * 86_400_000).toISOString().slice(0, 10);
    for (const day of [tomorrow, inEighteenDays, '2999-01-01']) {
      await expect(
        tracker.enqueueUntyped([{ type: 'payment-reminders', payload: { date: day } }]),
      ).rejects.toThrow(/has not begun yet/);
      const r = await cli(['enqueue', 'payment-reminders', '--payload', JSON.stringify({ date: day })]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/payload\.date: that day has not begun yet/);
      await expect(services.reminders.enqueueDueReminders(day, signal())).rejects.toThrow(
        /cannot run before that day begins/,
      );
    }
    await expect(
      tracker.enqueueUntyped([{ type: 'payment-reminders', payload: { date: '1999-12-31' } }]),
    ).rejects.toThrow(/must be from 2000-01-01 to 2099-12-31/);
    expect(await count('jobs')).toBe(0);
    expect(await count('notifications')).toBe(0);
    // Today is a day the sweep runs for.
    const today = new Date().toISOString().slice(0, 10);
    await tracker.enqueueUntyped([{ type: 'payment-reminders', payload: { date: today } }]);
    expect(await count('jobs')).toBe(1);
  });
});

/** The exact interest of a year, in cents, as a fraction: principal × rate × days / 365. */
function exactYear(principalCents: bigint, rateMicros: bigint, days: bigint) {
  return { numerator: principalCents * rateMicros * days, denominator: 365n * 1_000_000n };
}

describe('accrual precision and history', () => {
  test("a year's interest is within one cent of the exact figure from 10.00 to 10,000,000.00 (actual/365, 2024 has 366 days)", async () => {
    const balances = [1_000n, 100_000n, 1_234_567n, 99_999_999n, 1_000_000_000n];
    const ids = new Map<string, bigint>();
    for (const principalCents of balances) {
      const id = await insertFacility(t.db, {
        principalCents,
        rate: '0.050000',
        limitCents: 2_000_000_000n,
        createdAt: '2024-01-01T00:00:00Z',
      });
      ids.set(id, principalCents);
    }
    const { services } = domainHarness(t.db);
    // Nightly runs would post each month as it ends; one run per month does the same.
    for (let month = 0; month < 24; month++) {
      const end = new Date(Date.UTC(2024 + Math.floor(month / 12), (month % 12) + 1, 0));
      await services.credit.accrueInterest(end.toISOString().slice(0, 10), signal());
    }
    const years = await t.db.query<{ facility_id: string; year: string; cents: bigint; days: number }>(
      `SELECT facility_id, to_char(accrual_date, 'YYYY') AS year, sum(interest_cents)::bigint AS cents,
              count(*)::int AS days
       FROM interest_accruals GROUP BY 1, 2`,
    );
    expect(years.rows).toHaveLength(10);
    for (const r of years.rows) {
      const exact = exactYear(ids.get(r.facility_id)!, 50_000n, BigInt(r.days));
      expect(r.days).toBe(r.year === '2024' ? 366 : 365);
      // |cents − exact| ≤ 1 cent, in integers: |cents·D − N| ≤ D.
      const diff = r.cents * exact.denominator - exact.numerator;
      expect(
        diff < 0n ? -diff : diff,
        `${ids.get(r.facility_id)} in ${r.year}: ${r.cents}`,
      ).toBeLessThanOrEqual(exact.denominator);
    }
    const byBalance = (cents: bigint, year: string) =>
      years.rows.find((r) => ids.get(r.facility_id) === cents && r.year === year)!.cents;
    // 10.00 at 5 %: 0.50 a year (it was 0.00); 1,000.00 in 2024: 50.14 (it was 51.24).
    expect(byBalance(1_000n, '2025')).toBe(50n);
    expect(byBalance(100_000n, '2024')).toBe(5_014n);
    expect(byBalance(100_000n, '2025')).toBe(5_000n);
    // The monthly obligations carry the remainder too: their sum is the interest accrued.
    const posted = await t.db.query<{ facility_id: string; cents: bigint; cycles: number }>(
      'SELECT facility_id, sum(amount_cents)::bigint AS cents, count(*)::int AS cycles FROM obligations GROUP BY 1',
    );
    const accrued = await t.db.query<{ id: string; accrued_interest_cents: bigint }>(
      'SELECT id, accrued_interest_cents FROM credit_facilities',
    );
    expect(Object.fromEntries(posted.rows.map((r) => [r.facility_id, r.cents]))).toEqual(
      Object.fromEntries(accrued.rows.map((r) => [r.id, r.accrued_interest_cents])),
    );
    expect(posted.rows.every((r) => r.cycles === 24)).toBe(true);
  });

  test('a closed facility cannot be reopened: refused, nothing changes', async () => {
    const f = await insertFacility(t.db, { principalCents: 100n, rate: '0.1', status: 'closed' });
    await expect(
      t.db.query("UPDATE credit_facilities SET status = 'active' WHERE id = CAST(:id AS uuid)", { id: f }),
    ).rejects.toThrow(/is closed and cannot be reopened/);
    expect(await one('SELECT status FROM credit_facilities')).toEqual({ status: 'closed' });
  });

  test('gaps before the last accrued day heal: a deleted day is accrued again, once, and the balance is exact', async () => {
    const f = await insertFacility(t.db, { ...TEN_A_DAY, createdAt: '2026-06-01T00:00:00Z' });
    const { services } = domainHarness(t.db);
    await services.credit.accrueInterest('2026-06-10', signal());
    await t.db.query(
      "DELETE FROM interest_accruals WHERE accrual_date IN ('2026-06-04', '2026-06-07') AND facility_id = CAST(:id AS uuid)",
      { id: f },
    );
    expect((await facilityRow(f)).accrued_interest_cents).toBe(8_000n);
    const healed = await services.credit.accrueInterest('2026-06-10', signal());
    expect(healed).toMatchObject({ daysAccrued: 2, interestCents: 2_000n });
    expect(await count('interest_accruals')).toBe(10);
    expect((await facilityRow(f)).accrued_interest_cents).toBe(10_000n);
    // Healed for good: the next run only continues.
    expect(await services.credit.accrueInterest('2026-06-10', signal())).toMatchObject({ daysAccrued: 0 });
  });

  test('history from before this release with holes is checked once and filled', async () => {
    const f = await insertFacility(t.db, { ...TEN_A_DAY, createdAt: '2026-06-01T00:00:00Z' });
    // Rows written by an earlier release, with 3 and 5 June missing; existing facilities are flagged.
    await t.db.query(
      `INSERT INTO interest_accruals (facility_id, accrual_date, principal_cents, annual_rate, interest_cents)
       SELECT CAST(:id AS uuid), d, 3650000, 0.1, 1000
       FROM unnest(ARRAY[DATE '2026-06-01', '2026-06-02', '2026-06-04', '2026-06-06']) d`,
      { id: f },
    );
    // ... and a due date set by hand, which no obligation backs.
    await t.db.query(
      "UPDATE credit_facilities SET accrued_interest_cents = 4000, accrual_check_from = '2000-01-01', next_payment_due = '2026-06-20'",
    );
    const { services } = domainHarness(t.db);
    expect(await services.credit.accrueInterest('2026-06-08', signal())).toMatchObject({ daysAccrued: 4 });
    const days = await t.db.query<{ d: string }>(
      'SELECT CAST(accrual_date AS text) AS d FROM interest_accruals ORDER BY 1',
    );
    expect(days.rows.map((r) => r.d)).toEqual([
      '2026-06-01',
      '2026-06-02',
      '2026-06-03',
      '2026-06-04',
      '2026-06-05',
      '2026-06-06',
      '2026-06-07',
      '2026-06-08',
    ]);
    expect(await facilityRow(f)).toMatchObject({ accrued_interest_cents: 8_000n, next_payment_due: null });
  });

  test('a principal change that is not a disbursal applies from when it happened, not to back-filled days', async () => {
    const corrected = await insertFacility(t.db, { ...TEN_A_DAY, createdAt: '2026-06-01T00:00:00Z' });
    const repaid = await insertFacility(t.db, { ...TEN_A_DAY, createdAt: '2026-06-01T00:00:00Z' });
    const { services } = domainHarness(t.db);
    await services.credit.accrueInterest('2026-06-02', signal());
    // Today (long after June): a correction doubles one principal, a repayment halves the other.
    await t.db.query(
      'UPDATE credit_facilities SET drawn_principal_cents = 7300000 WHERE id = CAST(:id AS uuid)',
      { id: corrected },
    );
    await insertObligation(t.db, {
      facilityId: repaid,
      kind: 'principal',
      amountCents: 1_825_000n,
      dueDate: '2026-06-30',
    });
    await recordRepayment(t.db, { facilityId: repaid, amountCents: 1_825_000n });
    await services.credit.accrueInterest('2026-06-05', signal());
    const rows = await t.db.query<{ facility_id: string; days: string }>(
      `SELECT facility_id, string_agg(CAST(accrual_date AS text) || '=' || principal_cents || '/' || interest_cents,
                                      ',' ORDER BY accrual_date) AS days
       FROM interest_accruals GROUP BY facility_id`,
    );
    const expected =
      '2026-06-01=3650000/1000,2026-06-02=3650000/1000,2026-06-03=3650000/1000,2026-06-04=3650000/1000,2026-06-05=3650000/1000';
    expect(Object.fromEntries(rows.rows.map((r) => [r.facility_id, r.days]))).toEqual({
      [corrected]: expected,
      [repaid]: expected,
    });
  });

  test('a disbursal at exactly midnight belongs to the day it starts, not the day before', async () => {
    // 365.00 at 10 %: 10 cents a day; a disbursal of 365.00 executed at 00:00:00 on 3 June.
    const f = await insertFacility(t.db, {
      principalCents: 73_000n,
      rate: '0.100000',
      createdAt: '2026-06-01T00:00:00Z',
    });
    const process = await one<{ id: string }>(
      `INSERT INTO approval_processes (facility_id, amount_cents, committee_size, required_approvals, status)
       VALUES (CAST(:f AS uuid), 36500, 0, 0, 'approved') RETURNING id`,
      { f },
    );
    await t.db.query(
      `INSERT INTO disbursals (process_id, facility_id, amount_cents, executed_at)
       VALUES (CAST(:p AS uuid), CAST(:f AS uuid), 36500, '2026-06-03T00:00:00Z')`,
      { p: process.id, f },
    );
    const { services } = domainHarness(t.db);
    await services.credit.accrueInterest('2026-06-03', signal());
    const rows = await t.db.query<{ d: string; principal_cents: bigint }>(
      'SELECT CAST(accrual_date AS text) AS d, principal_cents FROM interest_accruals ORDER BY 1',
    );
    expect(rows.rows).toEqual([
      { d: '2026-06-01', principal_cents: 36_500n },
      { d: '2026-06-02', principal_cents: 36_500n },
      { d: '2026-06-03', principal_cents: 73_000n },
    ]);
  });

  test('no disbursal on the maturity day itself: the process fails with the reason', async () => {
    await disbursalPolicy(t.db, ['ann']);
    await acceptedPrice(t.db, 10_000_000n);
    const f = await insertFacility(t.db, { principalCents: 0n, rate: '0.1', collateralSats: 100_000_000n });
    await t.db.query(
      "UPDATE credit_facilities SET maturity_date = CAST(now() AT TIME ZONE 'UTC' AS date) WHERE id = CAST(:id AS uuid)",
      { id: f },
    );
    const { tracker, drain } = domainHarness(t.db);
    const processId = await createApprovalProcess(t.db, tracker, { facilityId: f, amountCents: 100n });
    await castVote(t.db, tracker, { processId, voter: 'ann', approve: true });
    await drain();
    expect(await one('SELECT status, failure_reason FROM approval_processes')).toEqual({
      status: 'failed',
      failure_reason: 'the facility has reached its maturity date',
    });
    expect(await count('disbursals')).toBe(0);
    expect((await facilityRow(f)).drawn_principal_cents).toBe(0n);
  });
});
