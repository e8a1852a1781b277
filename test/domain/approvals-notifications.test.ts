import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { uuid } from '../../shared/db/port.js';
import {
  castVote,
  createApprovalProcess,
  createCommittee,
  setApprovalPolicy,
} from '../../shared/domain/index.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { acceptedPrice, disbursalPolicy, domainHarness, insertFacility } from './support.js';

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

const one = async <T extends Record<string, unknown>>(sql: string, params = {}) =>
  (await t.db.query<T>(sql, params)).rows[0]!;
const signal = () => new AbortController().signal;

const count = async (table: string) =>
  (await one<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)).n;
/**
 * Records a collateralization transition as a valuation would, with its figures: 1 BTC at 100,000.00
 * against 80,000.00 principal and 1,000.00 interest (cover 1.2346).
 */
const transition = async (facilityId: string, from: string, to: string, at = new Date()) =>
  (
    await one<{ id: string }>(
      `INSERT INTO collateral_transitions (valuation_id, facility_id, from_state, to_state, cover, btc_usd_cents,
         collateral_sats, collateral_value_cents, principal_cents, interest_cents, margin_call_cvl, liquidation_cvl, at)
       VALUES (gen_random_uuid(), CAST(:facility AS uuid), :from, :to, 1.2346, 10000000, 100000000, 10000000,
               8000000, 100000, 1.25, 1.05, CAST(:at AS timestamptz))
       RETURNING id`,
      { facility: uuid(facilityId), from, to, at },
    )
  ).id;

/** 1 BTC at 100,000.00 covers 80,000.00 of outstanding at the default 125 % margin-call level. */
const ONE_BTC = 100_000_000n;
const PRICE = 10_000_000n;

describe('approval processing', () => {
  test('the deciding vote concludes the process and enqueues the job in its transaction; the job disburses once', async () => {
    await disbursalPolicy(t.db, ['ann', 'ben', 'cat'], 2);
    await acceptedPrice(t.db, PRICE);
    const facility = await insertFacility(t.db, {
      principalCents: 1_000_000n,
      rate: '0.1',
      limitCents: 5_000_000n,
      collateralSats: ONE_BTC,
    });
    const { tracker, drain, services } = domainHarness(t.db);
    const processId = await createApprovalProcess(t.db, tracker, {
      facilityId: facility,
      amountCents: 250_000n,
    });
    expect(await one('SELECT reserved_cents FROM credit_facilities')).toEqual({ reserved_cents: 250_000n });
    expect(await castVote(t.db, tracker, { processId, voter: 'ann', approve: true })).toEqual({
      decided: null,
      jobId: null,
    });
    expect(await count('jobs')).toBe(0);
    const decided = await castVote(t.db, tracker, { processId, voter: 'ben', approve: true });
    expect(decided.decided).toBe('approved');
    // Recorded with the deciding vote, before any job runs.
    expect(await one('SELECT status FROM approval_processes')).toEqual({ status: 'approved' });
    const job = await tracker.getJob(decided.jobId!);
    expect(job).toMatchObject({
      jobType: 'approval-processing',
      payload: { processId, facilityId: facility },
      idempotencyKey: `approval:${processId}`,
    });
    // The facility is the job's concurrency key: one job per facility runs at a time.
    expect(await one('SELECT concurrency_key FROM jobs')).toEqual({ concurrency_key: facility });
    await drain();
    expect(await tracker.getJob(job!.id)).toMatchObject({ status: 'completed' });
    expect(await one('SELECT drawn_principal_cents, reserved_cents FROM credit_facilities')).toEqual({
      drawn_principal_cents: 1_250_000n,
      reserved_cents: 0n,
    });
    const again = await services.approvals.processApproval(processId, signal());
    expect(again).toMatchObject({ action: 'already_concluded', status: 'approved' });
    expect(await one('SELECT drawn_principal_cents FROM credit_facilities')).toEqual({
      drawn_principal_cents: 1_250_000n,
    });
    expect(await count('disbursals')).toBe(1);
    await expect(castVote(t.db, tracker, { processId, voter: 'cat', approve: true })).rejects.toMatchObject({
      name: 'LendingInputError',
      code: 'approval_process_concluded',
      message: expect.stringMatching(/already approved/),
    });
    expect(await count('approval_votes')).toBe(2);
  });

  test("a job naming another facility than its process's fails at once, changing nothing", async () => {
    await disbursalPolicy(t.db, ['ann'], 1);
    await acceptedPrice(t.db, PRICE);
    const f = { principalCents: 0n, rate: '0.1', limitCents: 5_000_000n, collateralSats: ONE_BTC };
    const facility = await insertFacility(t.db, f);
    const other = await insertFacility(t.db, { ...f, email: 'other@example.com' });
    const { tracker, services } = domainHarness(t.db);
    const processId = await createApprovalProcess(t.db, tracker, {
      facilityId: facility,
      amountCents: 1000n,
    });
    await t.db.query("UPDATE approval_processes SET status = 'approved', concluded_at = now()");
    await expect(services.approvals.processApproval(processId, signal(), other)).rejects.toMatchObject({
      name: 'PermanentJobError',
      message: expect.stringMatching(new RegExp(`is for facility ${facility}, not ${other}`)),
    });
    expect(await count('disbursals')).toBe(0);
    expect((await services.approvals.processApproval(processId, signal(), facility)).action).toBe(
      'disbursed',
    );
  });

  test('strangers cannot vote: a stranger denial and three stranger approvals change nothing (3-of-3)', async () => {
    await disbursalPolicy(t.db, ['ann', 'ben', 'cat']);
    const facility = await insertFacility(t.db, { principalCents: 0n, rate: '0.1' });
    const { tracker } = domainHarness(t.db);
    const processId = await createApprovalProcess(t.db, tracker, {
      facilityId: facility,
      amountCents: 100_000n,
    });
    for (const [voter, approve] of [
      ['mallory', false],
      ['eve', true],
      ['trent', true],
      ['oscar', true],
    ] as const) {
      await expect(
        castVote(t.db, tracker, { processId, voter, approve, reason: 'because' }),
      ).rejects.toMatchObject({ name: 'LendingInputError', code: 'not_a_member' });
    }
    expect(await count('approval_votes')).toBe(0);
    expect(await count('jobs')).toBe(0);
    expect(await one('SELECT status FROM approval_processes')).toEqual({ status: 'pending' });
    expect(await count('disbursals')).toBe(0);
  });

  test("any member's denial denies at once with its reason; later votes are refused and the reservation is released", async () => {
    await disbursalPolicy(t.db, ['ann', 'ben', 'cat'], 2);
    const facility = await insertFacility(t.db, { principalCents: 0n, rate: '0.1', collateralSats: ONE_BTC });
    const { tracker, drain } = domainHarness(t.db);
    const processId = await createApprovalProcess(t.db, tracker, {
      facilityId: facility,
      amountCents: 100_000n,
    });
    await expect(castVote(t.db, tracker, { processId, voter: 'ann', approve: false })).rejects.toMatchObject({
      code: 'reason_required',
    });
    const denied = await castVote(t.db, tracker, {
      processId,
      voter: 'ann',
      approve: false,
      reason: 'income not verified',
    });
    expect(denied.decided).toBe('denied');
    expect(await one('SELECT status, denial_reason FROM approval_processes')).toEqual({
      status: 'denied',
      denial_reason: 'ann: income not verified',
    });
    expect(await one('SELECT reserved_cents FROM credit_facilities')).toEqual({ reserved_cents: 0n });
    // The 2-of-3 reproduction: deny, deny, approve, approve must not disburse.
    for (const [voter, approve] of [
      ['ben', false],
      ['cat', true],
      ['ben', true],
    ] as const) {
      await expect(castVote(t.db, tracker, { processId, voter, approve, reason: 'x' })).rejects.toMatchObject(
        {
          code: 'approval_process_concluded',
        },
      );
    }
    await drain();
    expect(await one('SELECT status FROM approval_processes')).toEqual({ status: 'denied' });
    expect(await count('disbursals')).toBe(0);
    expect(await count('approval_votes')).toBe(1);
  });

  test('a vote on an unknown process, or a second vote by the same member, is refused and writes nothing', async () => {
    await disbursalPolicy(t.db, ['ann', 'ben', 'cat'], 2);
    const facility = await insertFacility(t.db, { principalCents: 0n, rate: '0.1' });
    const { tracker } = domainHarness(t.db);
    const processId = await createApprovalProcess(t.db, tracker, { facilityId: facility, amountCents: 100n });
    const unknown = '01a22552-d933-7bfb-890b-3d5e0b6d0892';
    await expect(
      castVote(t.db, tracker, { processId: unknown, voter: 'ann', approve: true }),
    ).rejects.toMatchObject({ name: 'LendingInputError', code: 'approval_process_not_found' });
    await castVote(t.db, tracker, { processId, voter: 'ann', approve: true });
    await expect(
      castVote(t.db, tracker, { processId, voter: 'ann', approve: false, reason: 'changed my mind' }),
    ).rejects.toMatchObject({ name: 'LendingInputError', code: 'already_voted' });
    expect(await count('approval_votes')).toBe(1);
    expect(await count('jobs')).toBe(0);
  });

  test('a vote that rolls back after enqueueing takes its job and its decision with it', async () => {
    await disbursalPolicy(t.db, ['bob']);
    const facility = await insertFacility(t.db, { principalCents: 0n, rate: '0.1' });
    const { tracker } = domainHarness(t.db);
    const processId = await createApprovalProcess(t.db, tracker, { facilityId: facility, amountCents: 100n });
    const enqueueCalls: unknown[] = [];
    const watchedTracker: Pick<typeof tracker, 'enqueueUntyped'> = {
      enqueueUntyped: async (jobs, options) => {
        enqueueCalls.push(jobs);
        return tracker.enqueueUntyped(jobs, options);
      },
    };
    // A deferred constraint trigger fails the vote at COMMIT, i.e. after castVote has enqueued the job.
    await t.db.query(
      `CREATE FUNCTION reject_vote_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'vote rejected at commit'; END $$`,
    );
    await t.db.query(
      `CREATE CONSTRAINT TRIGGER reject_bob AFTER INSERT ON approval_votes DEFERRABLE INITIALLY DEFERRED
       FOR EACH ROW WHEN (NEW.voter = 'bob') EXECUTE FUNCTION reject_vote_at_commit()`,
    );
    try {
      await expect(
        castVote(t.db, watchedTracker, { processId, voter: 'bob', approve: true }),
      ).rejects.toThrow(/vote rejected at commit/);
    } finally {
      await t.db.query('DROP TRIGGER reject_bob ON approval_votes');
      await t.db.query('DROP FUNCTION reject_vote_at_commit()');
    }
    expect(enqueueCalls).toHaveLength(1);
    expect(await count('jobs')).toBe(0);
    expect(await count('approval_votes')).toBe(0);
    expect(await one('SELECT status FROM approval_processes')).toEqual({ status: 'pending' });
    const decided = await castVote(t.db, watchedTracker, { processId, voter: 'bob', approve: true });
    expect(decided.decided).toBe('approved');
    expect(await count('jobs')).toBe(1);
  });

  test('two deliveries of the same job at once disburse exactly once', async () => {
    await disbursalPolicy(t.db, ['ann']);
    await acceptedPrice(t.db, PRICE);
    const facility = await insertFacility(t.db, {
      principalCents: 0n,
      rate: '0.1',
      limitCents: 1_000_000n,
      collateralSats: ONE_BTC,
    });
    const { tracker, services } = domainHarness(t.db);
    const processId = await createApprovalProcess(t.db, tracker, {
      facilityId: facility,
      amountCents: 400_000n,
    });
    await castVote(t.db, tracker, { processId, voter: 'ann', approve: true });
    const results = await Promise.all(
      [1, 2, 3].map(() => services.approvals.processApproval(processId, signal())),
    );
    expect(results.map((r) => r.action).sort()).toEqual([
      'already_concluded',
      'already_concluded',
      'disbursed',
    ]);
    expect(results.map((r) => r.disbursedCents).reduce((a, b) => a + b, 0n)).toBe(400_000n);
    expect(await one('SELECT drawn_principal_cents, reserved_cents FROM credit_facilities')).toEqual({
      drawn_principal_cents: 400_000n,
      reserved_cents: 0n,
    });
    expect(await one('SELECT process_id, amount_cents FROM disbursals')).toEqual({
      process_id: processId,
      amount_cents: 400_000n,
    });
  });

  test('a delivery that waited for the process lock sees the disbursal made meanwhile', async () => {
    await disbursalPolicy(t.db, ['ann']);
    await acceptedPrice(t.db, PRICE);
    const facility = await insertFacility(t.db, {
      principalCents: 0n,
      rate: '0.1',
      limitCents: 1_000_000n,
      collateralSats: ONE_BTC,
    });
    const { tracker, services } = domainHarness(t.db);
    const processId = await createApprovalProcess(t.db, tracker, {
      facilityId: facility,
      amountCents: 400_000n,
    });
    await castVote(t.db, tracker, { processId, voter: 'ann', approve: true });
    // The first delivery holds the process lock while its disbursal is written (the trigger sleeps);
    // the others start meanwhile and wait for that lock.
    await t.db.query(`CREATE FUNCTION slow_disbursal() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$`);
    await t.db.query(
      'CREATE TRIGGER slow_disbursal BEFORE INSERT ON disbursals FOR EACH ROW EXECUTE FUNCTION slow_disbursal()',
    );
    const waiting = async (what: string) => {
      for (let i = 0; i < 200; i++) {
        const n = (
          await t.db.query<{ n: number }>(
            `SELECT count(*)::integer AS n FROM pg_stat_activity
             WHERE datname = current_database() AND ${what}`,
          )
        ).rows[0]!.n;
        if (n > 0) return n;
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error(`nothing waiting: ${what}`);
    };
    try {
      const first = services.approvals.processApproval(processId, signal());
      await waiting("wait_event = 'PgSleep'");
      const later = [1, 2].map(() => services.approvals.processApproval(processId, signal()));
      await waiting("wait_event_type = 'Lock'");
      const results = await Promise.all([first, ...later]);
      expect(results.map((r) => r.action)).toEqual(['disbursed', 'already_concluded', 'already_concluded']);
    } finally {
      await t.db.query('DROP TRIGGER slow_disbursal ON disbursals');
      await t.db.query('DROP FUNCTION slow_disbursal()');
    }
    expect(await one('SELECT drawn_principal_cents, reserved_cents FROM credit_facilities')).toEqual({
      drawn_principal_cents: 400_000n,
      reserved_cents: 0n,
    });
    expect(await count('disbursals')).toBe(1);
  });

  test('a job for a process without a recorded outcome fails and concludes nothing', async () => {
    await disbursalPolicy(t.db, ['ann', 'ben', 'cat'], 2);
    const facility = await insertFacility(t.db, { principalCents: 0n, rate: '0.1' });
    const { tracker, drain } = domainHarness(t.db);
    const processId = await createApprovalProcess(t.db, tracker, { facilityId: facility, amountCents: 100n });
    await castVote(t.db, tracker, { processId, voter: 'ann', approve: true });
    // Enqueued by hand (the CLI) before the deciding vote.
    const { job } = await tracker.enqueue({ type: 'approval-processing', payload: { processId } });
    await drain();
    expect(await tracker.getJob(job.id)).toMatchObject({
      status: 'failed',
      lastError: expect.stringMatching(/no recorded outcome/),
    });
    expect(await one('SELECT status, concluded_at FROM approval_processes')).toEqual({
      status: 'pending',
      concluded_at: null,
    });
  });

  test('two processes can never together exceed the limit: the second is refused when it opens', async () => {
    await disbursalPolicy(t.db, ['ann']);
    const facility = await insertFacility(t.db, { principalCents: 200n, rate: '0.1', limitCents: 1000n });
    const { tracker } = domainHarness(t.db);
    await createApprovalProcess(t.db, tracker, { facilityId: facility, amountCents: 500n });
    await expect(
      createApprovalProcess(t.db, tracker, { facilityId: facility, amountCents: 400n }),
    ).rejects.toMatchObject({ name: 'LendingInputError', code: 'over_limit' });
    expect(await count('approval_processes')).toBe(1);
    expect(await one('SELECT reserved_cents FROM credit_facilities')).toEqual({ reserved_cents: 500n });
    // 300 still fits.
    await createApprovalProcess(t.db, tracker, { facilityId: facility, amountCents: 300n });
    expect(await one('SELECT reserved_cents FROM credit_facilities')).toEqual({ reserved_cents: 800n });
    await expect(
      createApprovalProcess(t.db, tracker, { facilityId: facility, amountCents: 1n, processType: 'unknown' }),
    ).rejects.toMatchObject({ code: 'no_policy' });
  });

  test('a disbursal below margin-call cover, after maturity or without collateral is refused: process failed, reservation released', async () => {
    await disbursalPolicy(t.db, ['ann']);
    await acceptedPrice(t.db, PRICE);
    const { tracker, drain } = domainHarness(t.db);
    // No collateral: the first reproduction's 1,000.00.
    const bare = await insertFacility(t.db, { principalCents: 0n, rate: '0.1' });
    // 1 BTC at 100,000.00 with 70,000.00 drawn: 10,001.00 more leaves cover at 100,000 / 80,001 < 125 %.
    const thin = await insertFacility(t.db, {
      principalCents: 7_000_000n,
      rate: '0.1',
      collateralSats: ONE_BTC,
    });
    // Matured yesterday.
    const matured = await insertFacility(t.db, { principalCents: 0n, rate: '0.1', collateralSats: ONE_BTC });
    await t.db.query(
      "UPDATE credit_facilities SET maturity_date = CAST(now() AT TIME ZONE 'UTC' AS date) - 1 WHERE id = CAST(:id AS uuid)",
      { id: matured },
    );
    // Exactly at the margin-call level: 100,000 / 80,000 = 125 %, allowed.
    const exact = await insertFacility(t.db, {
      principalCents: 7_000_000n,
      rate: '0.1',
      collateralSats: ONE_BTC,
    });
    const open = async (facilityId: string, amountCents: bigint) => {
      const processId = await createApprovalProcess(t.db, tracker, { facilityId, amountCents });
      await castVote(t.db, tracker, { processId, voter: 'ann', approve: true });
      return processId;
    };
    const p = [
      await open(bare, 100_000n),
      await open(thin, 1_000_100n),
      await open(matured, 100n),
      await open(exact, 1_000_000n),
    ];
    await drain();
    const rows = (
      await t.db.query<{ id: string; status: string; failure_reason: string | null }>(
        'SELECT id, status, failure_reason FROM approval_processes',
      )
    ).rows;
    const byId = Object.fromEntries(rows.map((r) => [r.id, r]));
    expect(byId[p[0]!]).toMatchObject({
      status: 'failed',
      failure_reason: expect.stringMatching(/margin-call cover/),
    });
    expect(byId[p[1]!]).toMatchObject({
      status: 'failed',
      failure_reason: expect.stringMatching(/margin-call cover/),
    });
    expect(byId[p[2]!]).toMatchObject({
      status: 'failed',
      failure_reason: expect.stringMatching(/maturity/),
    });
    expect(byId[p[3]!]).toMatchObject({ status: 'approved', failure_reason: null });
    expect(await count('disbursals')).toBe(1);
    expect(
      await one<{ n: bigint }>('SELECT sum(reserved_cents)::bigint AS n FROM credit_facilities'),
    ).toEqual({ n: 0n });
  });

  test('an auto-approve policy opens the process approved and enqueues its job at once', async () => {
    await setApprovalPolicy(t.db, { processType: 'small-disbursal', rule: { kind: 'auto-approve' } });
    await acceptedPrice(t.db, PRICE);
    const facility = await insertFacility(t.db, { principalCents: 0n, rate: '0.1', collateralSats: ONE_BTC });
    const { tracker, drain } = domainHarness(t.db);
    await createApprovalProcess(t.db, tracker, {
      facilityId: facility,
      amountCents: 5_000n,
      processType: 'small-disbursal',
    });
    expect(await one('SELECT status FROM approval_processes')).toEqual({ status: 'approved' });
    await drain();
    expect(await one('SELECT drawn_principal_cents FROM credit_facilities')).toEqual({
      drawn_principal_cents: 5_000n,
    });
  });

  test('a threshold above the committee size is refused', async () => {
    const committeeId = await createCommittee(t.db, { name: 'two', members: ['ann', 'ben'] });
    await expect(
      setApprovalPolicy(t.db, {
        processType: 'disbursal',
        committeeId,
        rule: { kind: 'threshold', approvals: 3 },
      }),
    ).rejects.toMatchObject({ code: 'invalid_policy' });
    expect(await count('approval_policies')).toBe(0);
  });
});

describe('notifications', () => {
  test('a payment reminder is recorded in the outbox, sent once, and never again on retry or duplicate', async () => {
    const facility = await insertFacility(t.db, {
      principalCents: 5_000_00n,
      rate: '0.1',
      email: 'ann@example.com',
      nextPaymentDue: '2026-12-01',
      dueCents: 1_234_56n,
    });
    const { tracker, drain, notifications, services } = domainHarness(t.db);
    const payload = { kind: 'payment-reminder' as const, facilityId: facility, dueDate: '2026-12-01' };
    await tracker.enqueueMany([
      { type: 'notification', payload },
      { type: 'notification', payload }, // a duplicate job
    ]);
    await drain();
    expect(notifications.sent).toHaveLength(1);
    expect(notifications.sent[0]).toMatchObject({
      to: 'ann@example.com',
      subject: 'Payment reminder: USD 1,234.56 due 2026-12-01',
    });
    expect(notifications.sent[0]!.body).toContain('interest: USD 1,234.56');
    expect(await services.notifications.send(payload, signal())).toMatchObject({ outcome: 'already_sent' });
    expect(notifications.sent).toHaveLength(1);
    expect(await one('SELECT status, provider_message_id FROM notifications')).toEqual({
      status: 'sent',
      provider_message_id: 'm-1',
    });
  });

  test('a delivery failure is retried and then sent exactly once', async () => {
    const facility = await insertFacility(t.db, {
      principalCents: 100n,
      rate: '0.1',
      nextPaymentDue: '2026-12-01',
    });
    const { tracker, drain, notifications } = domainHarness(t.db);
    notifications.failNextSends(1);
    const { job } = await tracker.enqueue({
      type: 'notification',
      payload: { kind: 'payment-reminder', facilityId: facility, dueDate: '2026-12-01' },
    });
    await drain();
    expect(await tracker.getJob(job.id)).toMatchObject({
      status: 'retrying',
      lastError: 'mail server unavailable',
    });
    expect(await one('SELECT status FROM notifications')).toEqual({ status: 'pending' });
    await t.db.query('UPDATE jobs SET scheduled_at = now()');
    await drain();
    expect(notifications.sent).toHaveLength(1);
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'completed', attempts: 2 });
  });

  test('concurrent duplicate deliveries send once', async () => {
    const facility = await insertFacility(t.db, { principalCents: 100n, rate: '0.1' });
    const { services, notifications } = domainHarness(t.db);
    const transitionId = await transition(facility, 'fully-collateralized', 'under-margin-call');
    const payload = {
      kind: 'margin-call' as const,
      facilityId: facility,
      valuationDate: '2026-12-01',
      transitionId,
    };
    const results = await Promise.all([1, 2, 3, 4].map(() => services.notifications.send(payload, signal())));
    expect(results.map((r) => r.outcome).sort()).toEqual([
      'already_sent',
      'already_sent',
      'already_sent',
      'sent',
    ]);
    expect(notifications.sent).toHaveLength(1);
    expect(new Set(results.map((r) => r.messageId))).toEqual(new Set(['m-1']));
  });

  test('a notice for a facility closed before it went out is skipped, and nothing is recorded', async () => {
    const facility = await insertFacility(t.db, { principalCents: 0n, rate: '0.1', status: 'closed' });
    const { tracker, drain, notifications } = domainHarness(t.db);
    const { job } = await tracker.enqueue({
      type: 'notification',
      payload: { kind: 'payment-reminder', facilityId: facility, dueDate: '2026-12-01' },
    });
    await drain();
    expect(await tracker.getJob(job.id)).toMatchObject({ status: 'completed' });
    expect(notifications.sent).toHaveLength(0);
    expect((await one<{ n: number }>('SELECT count(*)::int AS n FROM notifications')).n).toBe(0);
  });

  test('an unknown facility fails the notification at once', async () => {
    const { tracker, drain, notifications } = domainHarness(t.db);
    const { job } = await tracker.enqueue({
      type: 'notification',
      payload: {
        kind: 'payment-reminder',
        facilityId: '00000000-0000-4000-8000-000000000002',
        dueDate: '2026-12-01',
      },
    });
    await drain();
    expect(await tracker.getJob(job.id)).toMatchObject({
      status: 'failed',
      attempts: 1,
      lastError: expect.stringMatching(/no credit facility/),
    });
    expect(notifications.sent).toHaveLength(0);
  });

  test('the daily sweep reminds of obligations due in three days, once, stating the amount due; interest only too', async () => {
    const due = await insertFacility(t.db, {
      principalCents: 100n,
      rate: '0.1',
      nextPaymentDue: '2026-12-04',
    });
    await insertFacility(t.db, { principalCents: 100n, rate: '0.1', nextPaymentDue: '2026-12-05' });
    // Owes 500.00 of interest and no principal: reminded all the same.
    const interestOnly = await insertFacility(t.db, {
      principalCents: 0n,
      rate: '0.1',
      nextPaymentDue: '2026-12-04',
      dueCents: 500_00n,
      email: 'interest-only@example.com',
    });
    const { tracker, drain, notifications } = domainHarness(t.db);
    await tracker.enqueueMany([
      { type: 'payment-reminders', payload: { date: '2026-12-01' } },
      { type: 'payment-reminders', payload: { date: '2026-12-01' } },
    ]);
    await drain();
    expect(notifications.sent.map((m) => [m.to, m.subject]).sort()).toEqual([
      ['borrower@example.com', 'Payment reminder: USD 10.00 due 2026-12-04'],
      ['interest-only@example.com', 'Payment reminder: USD 500.00 due 2026-12-04'],
    ]);
    const sentFor = await t.db.query<{ facility_id: string; key_date: string }>(
      'SELECT facility_id, key_date FROM notifications ORDER BY recipient',
    );
    expect(sentFor.rows).toEqual([
      { facility_id: due, key_date: '2026-12-04' },
      { facility_id: interestOnly, key_date: '2026-12-04' },
    ]);
  });

  test('a missed sweep is healed by the next: every payment due within the window and not yet reminded', async () => {
    // The 1 December sweep never ran. Due on the 4th: reminded by the 2nd's sweep; due on the 2nd itself
    // (its sweep on 29 November was missed too): reminded as well; due on the 6th: not yet.
    const dueFourth = await insertFacility(t.db, {
      principalCents: 100n,
      rate: '0.1',
      nextPaymentDue: '2026-12-04',
    });
    const dueToday = await insertFacility(t.db, {
      principalCents: 100n,
      rate: '0.1',
      nextPaymentDue: '2026-12-02',
    });
    await insertFacility(t.db, { principalCents: 100n, rate: '0.1', nextPaymentDue: '2026-12-06' });
    await insertFacility(t.db, { principalCents: 100n, rate: '0.1', nextPaymentDue: '2026-12-01' });
    const { tracker, drain, notifications } = domainHarness(t.db);
    await tracker.enqueue({ type: 'payment-reminders', payload: { date: '2026-12-02' } });
    await drain();
    const sent = (
      await t.db.query<{ facility_id: string; key_date: string }>(
        'SELECT facility_id, CAST(key_date AS text) AS key_date FROM notifications ORDER BY key_date',
      )
    ).rows;
    expect(sent).toEqual([
      { facility_id: dueToday, key_date: '2026-12-02' },
      { facility_id: dueFourth, key_date: '2026-12-04' },
    ]);
    expect(notifications.sent.map((m) => m.subject).sort()).toEqual([
      'Payment reminder: USD 10.00 due 2026-12-02',
      'Payment reminder: USD 10.00 due 2026-12-04',
    ]);
    // The next day's sweep finds those two reminded; only the payment due on the 6th is new.
    await tracker.enqueue({ type: 'payment-reminders', payload: { date: '2026-12-03' } });
    await drain();
    expect(notifications.sent.map((m) => m.subject)).toHaveLength(3);
    expect(notifications.sent[2]!.subject).toBe('Payment reminder: USD 10.00 due 2026-12-06');
  });

  test('the sweep pages through many due payments and a second sweep enqueues none', async () => {
    await t.db.query(
      `WITH f AS (
         INSERT INTO credit_facilities (customer_email, facility_limit_cents, drawn_principal_cents, annual_rate,
                                        accrued_interest_cents)
         SELECT 'due' || g || '@example.com', 1000000, 1000, 0.1, 100 FROM generate_series(1, 1234) g
         RETURNING id
       )
       INSERT INTO obligations (facility_id, kind, period_start, period_end, amount_cents, due_date, overdue_date,
                                defaulted_date)
       SELECT id, 'interest', DATE '2026-10-26', DATE '2026-11-24', 100, DATE '2026-12-04', DATE '2026-12-11',
              DATE '2027-03-04'
       FROM f`,
    );
    const { services } = domainHarness(t.db);
    expect(await services.reminders.enqueueDueReminders('2026-12-01', signal())).toMatchObject({
      dueDate: '2026-12-04',
      enqueued: 1234,
    });
    expect(await services.reminders.enqueueDueReminders('2026-12-01', signal())).toMatchObject({
      dueDate: '2026-12-04',
      enqueued: 0,
    });
    const jobs = await one<{ n: number; facilities: number }>(
      `SELECT count(*)::int AS n, count(DISTINCT payload->>'facilityId')::int AS facilities
       FROM jobs WHERE job_type = 'notification' AND payload->>'dueDate' = '2026-12-04'`,
    );
    expect(jobs).toEqual({ n: 1234, facilities: 1234 });
  });
});
