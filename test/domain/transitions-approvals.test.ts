import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import {
  castVote,
  createApprovalProcess,
  setApprovalPolicy,
  withdrawApprovalProcess,
} from '../../shared/domain/index.js';
import { findSchedule, jobForTick } from '../../shared/schedules/definitions.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { acceptedPrice, disbursalPolicy, domainHarness, insertFacility, movablePrice } from './support.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());
beforeEach(async () => {
  await t.db.query(
    'TRUNCATE jobs, job_execution_records, interest_accruals, notifications, disbursals, approval_votes, approval_processes, approval_policies, committee_members, committees, collateral_transitions, collateral_valuations, price_observations, manual_prices, credit_facilities CASCADE',
  );
});

const signal = () => new AbortController().signal;
const one = async <T extends Record<string, unknown>>(sql: string, params = {}) =>
  (await t.db.query<T>(sql, params)).rows[0]!;
const ONE_BTC = 100_000_000n;
const PRICE = 10_000_000n;
const today = () => new Date().toISOString().slice(0, 10);

/** 1 BTC against 80,000.00: margin call below 100,000.00 USD/BTC, liquidation below 84,000.00. */
async function valued() {
  const facility = await insertFacility(t.db, {
    principalCents: 8_000_000n,
    rate: '0.1',
    collateralSats: ONE_BTC,
    email: 'ann@example.com',
  });
  const price = movablePrice(11_000_000n);
  const h = domainHarness(t.db, { price: price.source });
  /** One valuation at `cents`; its notices are delivered only when `deliver` is set. */
  const at = async (cents: bigint, deliver = true) => {
    price.set(cents);
    const r = await h.services.portfolio.revalue(signal());
    if (deliver) await h.drain();
    return r;
  };
  await at(11_000_000n);
  return { facility, at, ...h };
}

describe('defect 4: one notice per transition, rendered from the transition', () => {
  test('a second margin call on the same day is a new transition and sends its own notice', async () => {
    const { at, notifications } = await valued();
    await at(9_900_000n); // 1.2375: margin call
    await at(10_500_000n); // 1.3125 ≥ 1.25 + 0.05: recovered
    await at(9_900_000n); // margin call again, the same day
    // Today's code keyed notices by facility, kind and day: the second margin call sent nothing, and the
    // borrower's last e-mail said "Collateral restored" while under margin call.
    expect(notifications.sent.map((m) => m.subject)).toEqual([
      `Margin call (${today()}): collateral below the required level`,
      `Collateral restored (${today()}): fully collateralized again`,
      `Margin call (${today()}): collateral below the required level`,
    ]);
    expect(
      await one('SELECT count(*)::int AS n, count(DISTINCT transition_id)::int AS d FROM notifications'),
    ).toEqual({
      n: 3,
      d: 3,
    });
  });

  test('a notice delivered after recovery still says what happened at the transition, and when', async () => {
    const { facility, at, drain, notifications } = await valued();
    await at(9_900_000n, false); // into margin call; the e-mail is not out yet
    await at(10_500_000n, false); // recovered before the notice went out
    await drain();
    const [call, restored] = notifications.sent;
    const transitions = (
      await t.db.query<{ at: Date }>(
        "SELECT at FROM collateral_transitions WHERE to_state <> 'fully-collateralized' OR from_state <> 'no-exposure' ORDER BY at",
      )
    ).rows;
    const hhmm = (d: Date) => `${d.toISOString().slice(0, 10)} at ${d.toISOString().slice(11, 16)} UTC`;
    expect(call!.subject).toMatch(/^Margin call/);
    // Today's code rendered it at send time from the recovered facility (cover 1.3125).
    expect(call!.body).toBe(
      [
        `On ${hhmm(transitions[0]!.at)}, at a bitcoin price of USD 99,000.00, the collateral of your credit facility ${facility}`,
        '(1.00000000 BTC, valued at USD 99,000.00) covered 1.2375 times the total outstanding',
        '(principal USD 80,000.00 plus interest USD 0.00).',
        'That is below its margin-call level of 125 %.',
        'Please add collateral or repay part of the loan to restore the required cover.',
        `This notice describes your facility as of ${hhmm(transitions[0]!.at)}; any later change is notified separately.`,
      ].join('\n'),
    );
    expect(restored!.subject).toMatch(/^Collateral restored/);
    expect(restored!.body).toContain('covered 1.3125 times');
    expect(restored!.body).toContain(`as of ${hhmm(transitions[1]!.at)}`);
  });

  test('on the way up from the liquidation level: no margin-call e-mail, and the buffer holds there too', async () => {
    const { at, notifications } = await valued();
    // Exactly 125 %: still fully collateralized (three runs, so the reference is 100,000.00).
    for (let run = 0; run < 3; run++) await at(10_000_000n);
    await at(8_300_000n); // 1.0375 < 1.05: liquidation
    // 86,000.00: 1.075, above the liquidation level but inside its buffer (1.05 + 0.05): stays put.
    await at(8_600_000n);
    expect(await one('SELECT collateralization_state FROM credit_facilities')).toEqual({
      collateralization_state: 'under-liquidation',
    });
    // 88,000.00: 1.10 clears the buffer: up to margin call, which is no new margin call.
    await at(8_800_000n);
    expect(await one('SELECT collateralization_state FROM credit_facilities')).toEqual({
      collateralization_state: 'under-margin-call',
    });
    expect(notifications.sent.map((m) => m.subject)).toEqual([
      `Liquidation warning (${today()}): collateral at the liquidation level`,
    ]);
    expect(notifications.sent[0]!.body).toContain('below its liquidation level of 105 %');
    const moves = (
      await t.db.query<{ from_state: string; to_state: string }>(
        'SELECT from_state, to_state FROM collateral_transitions ORDER BY at',
      )
    ).rows;
    expect(moves.slice(1)).toEqual([
      { from_state: 'fully-collateralized', to_state: 'under-liquidation' },
      { from_state: 'under-liquidation', to_state: 'under-margin-call' },
    ]);
  });

  test('a notice job queued before transitions had ids still sends that transition, once', async () => {
    const { facility, at, tracker, drain, notifications } = await valued();
    await at(9_900_000n, false);
    await t.db.query("DELETE FROM jobs WHERE job_type = 'notification'");
    const legacy = { kind: 'margin-call' as const, facilityId: facility, valuationDate: today() };
    await tracker.enqueueMany([
      { type: 'notification', payload: legacy },
      { type: 'notification', payload: legacy },
    ]);
    await drain();
    expect(notifications.sent.map((m) => m.subject)).toEqual([
      `Margin call (${today()}): collateral below the required level`,
    ]);
    expect(notifications.sent[0]!.body).toContain('covered 1.2375 times');
  });
});

describe('defect 7: an open approval process can be withdrawn or expire', () => {
  test('the initiator withdraws an open process: its reservation is released; nobody else can', async () => {
    await disbursalPolicy(t.db, ['ann', 'ben']);
    const facility = await insertFacility(t.db, { principalCents: 0n, rate: '0.1', limitCents: 1_000_000n });
    const { tracker } = domainHarness(t.db);
    const processId = await createApprovalProcess(t.db, tracker, {
      facilityId: facility,
      amountCents: 1_000_000n,
      initiatedBy: 'officer-olga',
    });
    // The limit is fully reserved: a second process does not fit.
    await expect(
      createApprovalProcess(t.db, tracker, { facilityId: facility, amountCents: 1n }),
    ).rejects.toMatchObject({ code: 'over_limit' });
    for (const [by, reason, code] of [
      ['ann', 'not mine', 'not_the_initiator'],
      ['officer-olga', '  ', 'reason_required'],
    ] as const) {
      await expect(withdrawApprovalProcess(t.db, { processId, by, reason })).rejects.toMatchObject({
        name: 'LendingInputError',
        code,
      });
    }
    expect(
      await one(
        'SELECT p.status, f.reserved_cents FROM approval_processes p JOIN credit_facilities f ON f.id = p.facility_id',
      ),
    ).toEqual({
      status: 'pending',
      reserved_cents: 1_000_000n,
    });
    await withdrawApprovalProcess(t.db, { processId, by: 'officer-olga', reason: 'customer changed plans' });
    expect(
      await one(
        'SELECT p.status, p.withdrawal_reason, p.concluded_at IS NOT NULL AS concluded, f.reserved_cents FROM approval_processes p JOIN credit_facilities f ON f.id = p.facility_id',
      ),
    ).toEqual({
      status: 'withdrawn',
      withdrawal_reason: 'customer changed plans',
      concluded: true,
      reserved_cents: 0n,
    });
    // Concluded: no vote, no second withdrawal; the limit is free for a new process.
    await expect(castVote(t.db, tracker, { processId, voter: 'ann', approve: true })).rejects.toMatchObject({
      code: 'approval_process_concluded',
    });
    await expect(
      withdrawApprovalProcess(t.db, { processId, by: 'officer-olga', reason: 'again' }),
    ).rejects.toMatchObject({ code: 'approval_process_concluded' });
    await createApprovalProcess(t.db, tracker, { facilityId: facility, amountCents: 1_000_000n });
  });

  test("an open process expires after its policy's time: the scheduled sweep releases its reservation, once", async () => {
    const committeeId = (await disbursalPolicy(t.db, ['ann', 'ben'])) as string;
    await setApprovalPolicy(t.db, {
      processType: 'disbursal',
      committeeId,
      rule: { kind: 'all-members' },
      expiresAfterSeconds: 3600,
    });
    const facility = await insertFacility(t.db, { principalCents: 0n, rate: '0.1', limitCents: 1_000_000n });
    const { tracker, drain } = domainHarness(t.db);
    const stale = await createApprovalProcess(t.db, tracker, { facilityId: facility, amountCents: 600_000n });
    const fresh = await createApprovalProcess(t.db, tracker, { facilityId: facility, amountCents: 400_000n });
    expect(
      await one<{ seconds: string }>(
        'SELECT CAST(extract(epoch FROM expires_at - created_at) AS text) AS seconds FROM approval_processes WHERE id = CAST(:id AS uuid)',
        { id: fresh },
      ),
    ).toEqual({ seconds: '3600.000000' });
    await castVote(t.db, tracker, { processId: stale, voter: 'ann', approve: true });
    await t.db.query(
      "UPDATE approval_processes SET expires_at = now() - interval '1 second' WHERE id = CAST(:id AS uuid)",
      { id: stale },
    );
    // Past its time, a vote decides nothing, even before the sweep has run.
    await expect(
      castVote(t.db, tracker, { processId: stale, voter: 'ben', approve: true }),
    ).rejects.toMatchObject({
      code: 'approval_process_expired',
    });
    const schedule = findSchedule('approval-expiry')!;
    await tracker.enqueueUntyped([
      jobForTick(schedule, new Date()),
      jobForTick(schedule, new Date(Date.now() + 600_000)),
    ]);
    await drain();
    const rows = (
      await t.db.query<{ id: string; status: string }>(
        'SELECT id, status FROM approval_processes ORDER BY created_at',
      )
    ).rows;
    expect(rows).toEqual([
      { id: stale, status: 'expired' },
      { id: fresh, status: 'pending' },
    ]);
    expect(await one('SELECT reserved_cents FROM credit_facilities')).toEqual({ reserved_cents: 400_000n });
    expect(
      await one(
        "SELECT count(*)::int AS n, count(*) FILTER (WHERE status = 'completed')::int AS done FROM jobs WHERE job_type = 'approval-processing'",
      ),
    ).toEqual({ n: 2, done: 2 });
    // Idempotent: another sweep expires nothing more.
    const { services } = domainHarness(t.db);
    expect(await services.approvals.expireOverdueProcesses(signal())).toEqual({ expired: 0 });
    expect(await one('SELECT reserved_cents FROM credit_facilities')).toEqual({ reserved_cents: 400_000n });
  });

  test('a policy expiry outside 60 s to a year is refused', async () => {
    const committeeId = (await disbursalPolicy(t.db, ['ann'])) as string;
    for (const expiresAfterSeconds of [59, 366 * 86_400, 1.5]) {
      await expect(
        setApprovalPolicy(t.db, {
          processType: 'x',
          committeeId,
          rule: { kind: 'all-members' },
          expiresAfterSeconds,
        }),
      ).rejects.toMatchObject({ code: 'invalid_policy' });
    }
  });
});

describe('approval gates the suite had not pinned', () => {
  test('a process on a closed facility is refused when it opens, writing nothing', async () => {
    await disbursalPolicy(t.db, ['ann']);
    const facility = await insertFacility(t.db, { principalCents: 0n, rate: '0.1', status: 'closed' });
    const { tracker } = domainHarness(t.db);
    await expect(
      createApprovalProcess(t.db, tracker, { facilityId: facility, amountCents: 100n }),
    ).rejects.toMatchObject({ name: 'LendingInputError', code: 'facility_closed' });
    expect(
      await one(
        'SELECT (SELECT count(*) FROM approval_processes)::int AS processes, (SELECT reserved_cents FROM credit_facilities) AS reserved',
      ),
    ).toEqual({ processes: 0, reserved: 0n });
  });

  test('the cover gate counts accrued interest: what fits on principal alone is refused', async () => {
    await disbursalPolicy(t.db, ['ann']);
    await acceptedPrice(t.db, PRICE);
    // 1 BTC at 100,000.00 with 70,000.00 drawn: 10,000.00 more is exactly 125 % on principal, but with
    // 1,000.00 of accrued interest the outstanding is 81,000.00 and the cover 1.2346.
    const withInterest = await insertFacility(t.db, {
      principalCents: 7_000_000n,
      rate: '0.1',
      collateralSats: ONE_BTC,
    });
    await t.db.query(
      'UPDATE credit_facilities SET accrued_interest_cents = 100000 WHERE id = CAST(:id AS uuid)',
      {
        id: withInterest,
      },
    );
    const without = await insertFacility(t.db, {
      principalCents: 7_000_000n,
      rate: '0.1',
      collateralSats: ONE_BTC,
    });
    const { tracker, drain } = domainHarness(t.db);
    const open = async (facilityId: string) => {
      const processId = await createApprovalProcess(t.db, tracker, { facilityId, amountCents: 1_000_000n });
      await castVote(t.db, tracker, { processId, voter: 'ann', approve: true });
      return processId;
    };
    const refused = await open(withInterest);
    const allowed = await open(without);
    await drain();
    const status = async (id: string) =>
      one('SELECT status, failure_reason FROM approval_processes WHERE id = CAST(:id AS uuid)', { id });
    expect(await status(refused)).toEqual({
      status: 'failed',
      failure_reason: 'the disbursal would leave the facility below its margin-call cover',
    });
    expect(await status(allowed)).toEqual({ status: 'approved', failure_reason: null });
  });
});
