import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { castVote, createApprovalProcess } from '../../shared/domain/index.js';
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

const one = async <T extends Record<string, unknown>>(sql: string, params = {}) =>
  (await t.db.query<T>(sql, params)).rows[0]!;
const signal = () => new AbortController().signal;

describe('approval processing', () => {
  test('the deciding vote enqueues the job in its transaction; the job concludes and disburses once', async () => {
    const facility = await insertFacility(t.db, {
      principalCents: 1_000_000n,
      rate: '0.1',
      limitCents: 5_000_000n,
    });
    const processId = await createApprovalProcess(t.db, {
      facilityId: facility,
      amountCents: 250_000n,
      committeeSize: 3,
      requiredApprovals: 2,
    });
    const { tracker, drain, services } = domainHarness(t.db);
    expect(await castVote(t.db, tracker, { processId, voter: 'ann', approve: true })).toEqual({
      decided: null,
      jobId: null,
    });
    expect((await one<{ n: number }>('SELECT count(*)::int AS n FROM jobs')).n).toBe(0);
    const decided = await castVote(t.db, tracker, { processId, voter: 'ben', approve: true });
    expect(decided.decided).toBe('approved');
    const job = await tracker.getJob(decided.jobId!);
    expect(job).toMatchObject({
      jobType: 'approval-processing',
      payload: { processId },
      idempotencyKey: `approval:${processId}`,
    });
    await drain();
    expect(await tracker.getJob(job!.id)).toMatchObject({ status: 'completed' });
    expect(await one('SELECT status FROM approval_processes')).toEqual({ status: 'approved' });
    expect(await one('SELECT drawn_principal_cents FROM credit_facilities')).toEqual({
      drawn_principal_cents: 1_250_000n,
    });
    // Run again (a retry or a duplicate delivery): nothing changes.
    const again = await services.approvals.processApproval(processId, signal());
    expect(again).toMatchObject({ action: 'already_concluded', status: 'approved' });
    expect(await one('SELECT drawn_principal_cents FROM credit_facilities')).toEqual({
      drawn_principal_cents: 1_250_000n,
    });
    expect(await one<{ n: number }>('SELECT count(*)::int AS n FROM disbursals')).toEqual({ n: 1 });
    // Voting on a concluded process is refused.
    await expect(castVote(t.db, tracker, { processId, voter: 'cat', approve: true })).rejects.toMatchObject({
      name: 'LendingInputError',
      code: 'approval_process_concluded',
      message: expect.stringMatching(/already approved/),
    });
  });

  test('a vote on an unknown process, or a second vote by the same member, is refused and writes nothing', async () => {
    const facility = await insertFacility(t.db, { principalCents: 0n, rate: '0.1' });
    const processId = await createApprovalProcess(t.db, {
      facilityId: facility,
      amountCents: 100n,
      committeeSize: 3,
      requiredApprovals: 2,
    });
    const { tracker } = domainHarness(t.db);
    const unknown = '01a22552-d933-7bfb-890b-3d5e0b6d0892';
    await expect(
      castVote(t.db, tracker, { processId: unknown, voter: 'ann', approve: true }),
    ).rejects.toMatchObject({
      name: 'LendingInputError',
      code: 'approval_process_not_found',
    });
    await castVote(t.db, tracker, { processId, voter: 'ann', approve: true });
    await expect(castVote(t.db, tracker, { processId, voter: 'ann', approve: false })).rejects.toMatchObject({
      name: 'LendingInputError',
      code: 'already_voted',
    });
    expect(await one<{ n: number }>('SELECT count(*)::int AS n FROM approval_votes')).toEqual({ n: 1 });
    expect(await one<{ n: number }>('SELECT count(*)::int AS n FROM jobs')).toEqual({ n: 0 });
  });

  test('a vote that rolls back after enqueueing takes its job with it', async () => {
    const facility = await insertFacility(t.db, { principalCents: 0n, rate: '0.1' });
    const processId = await createApprovalProcess(t.db, {
      facilityId: facility,
      amountCents: 100n,
      committeeSize: 1,
      requiredApprovals: 1,
    });
    const { tracker } = domainHarness(t.db);
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
    expect((await one<{ n: number }>('SELECT count(*)::int AS n FROM jobs')).n).toBe(0);
    expect((await one<{ n: number }>('SELECT count(*)::int AS n FROM approval_votes')).n).toBe(0);
    expect(await one('SELECT status FROM approval_processes')).toEqual({ status: 'pending' });
    // The same vote, once it can commit, enqueues the job; voting again is refused and enqueues nothing.
    const decided = await castVote(t.db, watchedTracker, { processId, voter: 'bob', approve: true });
    expect(decided.decided).toBe('approved');
    expect((await one<{ n: number }>('SELECT count(*)::int AS n FROM jobs')).n).toBe(1);
  });

  test('two deliveries of the same job at once disburse exactly once', async () => {
    const facility = await insertFacility(t.db, { principalCents: 0n, rate: '0.1', limitCents: 1_000_000n });
    const processId = await createApprovalProcess(t.db, {
      facilityId: facility,
      amountCents: 400_000n,
      committeeSize: 1,
      requiredApprovals: 1,
    });
    const { tracker, services } = domainHarness(t.db);
    await castVote(t.db, tracker, { processId, voter: 'ann', approve: true });
    const results = await Promise.all(
      [1, 2, 3].map(() => services.approvals.processApproval(processId, signal())),
    );
    expect(results.map((r) => r.action).sort()).toEqual([
      'already_concluded',
      'already_concluded',
      'concluded',
    ]);
    expect(results.map((r) => r.disbursedCents).reduce((a, b) => a + b, 0n)).toBe(400_000n);
    expect(await one('SELECT drawn_principal_cents FROM credit_facilities')).toEqual({
      drawn_principal_cents: 400_000n,
    });
    expect(await one('SELECT process_id, amount_cents FROM disbursals')).toEqual({
      process_id: processId,
      amount_cents: 400_000n,
    });
  });

  test('a process whose votes are not all in is not concluded', async () => {
    const facility = await insertFacility(t.db, { principalCents: 0n, rate: '0.1' });
    const processId = await createApprovalProcess(t.db, {
      facilityId: facility,
      amountCents: 100n,
      committeeSize: 3,
      requiredApprovals: 2,
    });
    const { tracker, drain } = domainHarness(t.db);
    await castVote(t.db, tracker, { processId, voter: 'ann', approve: true });
    // Enqueued by hand (the CLI) before the deciding vote.
    const { job } = await tracker.enqueue({ type: 'approval-processing', payload: { processId } });
    await drain();
    expect(await tracker.getJob(job.id)).toMatchObject({
      status: 'failed',
      lastError: expect.stringMatching(/undecided \(1 of 2 approvals\)/),
    });
    expect(await one('SELECT status, concluded_at FROM approval_processes')).toEqual({
      status: 'pending',
      concluded_at: null,
    });
  });

  test('denied when approval becomes impossible: no disbursal', async () => {
    const facility = await insertFacility(t.db, { principalCents: 0n, rate: '0.1' });
    const processId = await createApprovalProcess(t.db, {
      facilityId: facility,
      amountCents: 100n,
      committeeSize: 3,
      requiredApprovals: 2,
    });
    const { tracker, drain } = domainHarness(t.db);
    await castVote(t.db, tracker, { processId, voter: 'ann', approve: false });
    const decided = await castVote(t.db, tracker, { processId, voter: 'ben', approve: false });
    expect(decided.decided).toBe('denied');
    await drain();
    expect(await one('SELECT status FROM approval_processes')).toEqual({ status: 'denied' });
    expect(await one<{ n: number }>('SELECT count(*)::int AS n FROM disbursals')).toEqual({ n: 0 });
  });

  test('an unknown process or an over-limit disbursal fails at once, changing nothing', async () => {
    const facility = await insertFacility(t.db, { principalCents: 900n, rate: '0.1', limitCents: 1000n });
    const processId = await createApprovalProcess(t.db, {
      facilityId: facility,
      amountCents: 500n,
      committeeSize: 1,
      requiredApprovals: 1,
    });
    const { tracker, drain } = domainHarness(t.db);
    await castVote(t.db, tracker, { processId, voter: 'ann', approve: true });
    await tracker.enqueue({
      type: 'approval-processing',
      payload: { processId: '00000000-0000-4000-8000-000000000001' },
    });
    await drain();
    const failed = await tracker.listJobs({ status: 'failed' });
    expect(failed.map((j) => j.lastError).sort()).toEqual([
      expect.stringMatching(/exceeds the facility's limit/),
      expect.stringMatching(/no approval process/),
    ]);
    expect(failed.every((j) => j.attempts === 1)).toBe(true);
    expect(await one('SELECT status FROM approval_processes')).toEqual({ status: 'pending' });
    expect(await one('SELECT drawn_principal_cents FROM credit_facilities')).toEqual({
      drawn_principal_cents: 900n,
    });
  });
});

describe('notifications', () => {
  test('a payment reminder is recorded in the outbox, sent once, and never again on retry or duplicate', async () => {
    const facility = await insertFacility(t.db, {
      principalCents: 1_234_56n,
      rate: '0.1',
      email: 'ann@example.com',
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
      subject: 'Payment reminder: due 2026-12-01',
    });
    expect(notifications.sent[0]!.body).toContain('USD 1,234.56');
    expect(await services.notifications.send(payload, signal())).toMatchObject({ outcome: 'already_sent' });
    expect(notifications.sent).toHaveLength(1);
    expect(await one('SELECT status, provider_message_id FROM notifications')).toEqual({
      status: 'sent',
      provider_message_id: 'm-1',
    });
  });

  test('a delivery failure is retried and then sent exactly once', async () => {
    const facility = await insertFacility(t.db, { principalCents: 100n, rate: '0.1' });
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
    const payload = { kind: 'margin-call' as const, facilityId: facility, valuationDate: '2026-12-01' };
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

  test('the daily sweep enqueues reminders for payments due in three days, once', async () => {
    const due = await insertFacility(t.db, {
      principalCents: 100n,
      rate: '0.1',
      nextPaymentDue: '2026-12-04',
    });
    await insertFacility(t.db, { principalCents: 100n, rate: '0.1', nextPaymentDue: '2026-12-05' });
    await insertFacility(t.db, { principalCents: 0n, rate: '0.1', nextPaymentDue: '2026-12-04' });
    const { tracker, drain, notifications } = domainHarness(t.db);
    await tracker.enqueueMany([
      { type: 'payment-reminders', payload: { date: '2026-12-01' } },
      { type: 'payment-reminders', payload: { date: '2026-12-01' } },
    ]);
    await drain();
    expect(notifications.sent).toHaveLength(1);
    const sentFor = await one<{ facility_id: string; key_date: string }>(
      'SELECT facility_id, key_date FROM notifications',
    );
    expect(sentFor).toEqual({ facility_id: due, key_date: '2026-12-04' });
  });

  test('the sweep pages through many due payments and a second sweep enqueues none', async () => {
    await t.db.query(
      `INSERT INTO credit_facilities (customer_email, facility_limit_cents, drawn_principal_cents, annual_rate,
                                      next_payment_due)
       SELECT 'due' || g || '@example.com', 1000000, 1000, 0.1, DATE '2026-12-04' FROM generate_series(1, 1234) g`,
    );
    const { services } = domainHarness(t.db);
    expect(await services.reminders.enqueueDueReminders('2026-12-01', signal())).toEqual({
      dueDate: '2026-12-04',
      enqueued: 1234,
    });
    expect(await services.reminders.enqueueDueReminders('2026-12-01', signal())).toEqual({
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
