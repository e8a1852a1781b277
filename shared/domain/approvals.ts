import { type Database, type Queryable, uuid } from '../db/port.js';
import type { ApprovalService } from '../job-types/services.js';
import { PermanentJobError } from '../jobs/errors.js';
import type { JobTracker } from '../jobs/tracker.js';
import { LOCK_FACILITY_BULK_UPDATES_SQL } from './bulk.js';
import { LendingInputError } from './errors.js';

export {
  type ApprovalRule,
  createCommittee,
  DEFAULT_PROCESS_EXPIRY_SECONDS,
  setApprovalPolicy,
} from './approval-policies.js';

export type ApprovalOutcome = 'approved' | 'denied';
export type ProcessStatus = 'pending' | ApprovalOutcome | 'failed' | 'withdrawn' | 'expired';

/** Processes expired per statement by the sweep. */
const EXPIRY_BATCH = 1000;

export interface ApprovalResult {
  processId: string;
  /** What this run did: disbursed, refused the disbursal (process failed), or nothing (already carried out). */
  action: 'disbursed' | 'refused' | 'already_concluded';
  status: ProcessStatus;
  disbursedCents: bigint;
  reason?: string;
}

/**
 * Opens a disbursal's approval process under its process type's policy, reserving the amount against the
 * facility's limit in the same statement (so two processes can never together exceed it). Refused, writing
 * nothing, when there is no policy, the facility is unknown or closed, or the amount does not fit. Under an
 * auto-approve policy the process opens approved and its job is enqueued in the same transaction. An open
 * process expires its policy's time after opening; `initiatedBy` (the operator opening it) may withdraw it.
 */
export async function createApprovalProcess(
  db: Database,
  jobs: Pick<JobTracker, 'enqueueUntyped'>,
  input: { facilityId: string; amountCents: bigint; processType?: string; initiatedBy?: string },
): Promise<string> {
  const processType = input.processType ?? 'disbursal';
  if (input.amountCents <= 0n) throw new LendingInputError('invalid_amount', 'the amount must be positive');
  const initiatedBy = input.initiatedBy?.trim();
  if (initiatedBy !== undefined && (initiatedBy.length === 0 || initiatedBy.length > 200)) {
    throw new LendingInputError('invalid_operator', 'the initiator is named in 1-200 characters');
  }
  return db.transaction(async (tx) => {
    const params = {
      facility: uuid(input.facilityId),
      amount: input.amountCents,
      type: processType,
      initiated_by: initiatedBy ?? null,
    };
    const opened = await tx.query<{ id: string; status: ProcessStatus }>(
      `WITH policy AS (
         SELECT p.committee_id, p.rule,
                (SELECT count(*)::integer FROM committee_members m WHERE m.committee_id = p.committee_id) AS size,
                p.threshold, p.expires_after_seconds
         FROM approval_policies p WHERE p.process_type = :type
       ), reserved AS (
         UPDATE credit_facilities SET reserved_cents = reserved_cents + :amount
         WHERE id = CAST(:facility AS uuid) AND status = 'active' AND EXISTS (SELECT 1 FROM policy)
           AND drawn_principal_cents + reserved_cents + :amount <= facility_limit_cents
         RETURNING id
       )
       INSERT INTO approval_processes (facility_id, amount_cents, process_type, committee_id, committee_size,
                                       required_approvals, status, concluded_at, initiated_by, expires_at)
       SELECT r.id, :amount, :type, p.committee_id, p.size,
              CASE p.rule WHEN 'threshold' THEN p.threshold WHEN 'all-members' THEN p.size ELSE 0 END,
              CASE WHEN p.rule = 'auto-approve' THEN 'approved' ELSE 'pending' END,
              CASE WHEN p.rule = 'auto-approve' THEN now() END,
              :initiated_by,
              CASE WHEN p.rule <> 'auto-approve' THEN now() + make_interval(secs => p.expires_after_seconds) END
       FROM reserved r CROSS JOIN policy p
       RETURNING id, status`,
      params,
    );
    const process = opened.rows[0];
    if (!process) throw await whyNotOpened(tx, input, processType);
    if (process.status === 'approved') await enqueueProcessing(tx, jobs, process.id);
    return process.id;
  });
}

async function whyNotOpened(
  tx: Queryable,
  input: { facilityId: string; amountCents: bigint },
  processType: string,
): Promise<LendingInputError> {
  const policy = await tx.query('SELECT 1 FROM approval_policies WHERE process_type = :type', {
    type: processType,
  });
  if (policy.rowCount === 0)
    return new LendingInputError('no_policy', `no approval policy for process type "${processType}"`);
  const f = (
    await tx.query<{ status: string; available: bigint }>(
      `SELECT status, facility_limit_cents - drawn_principal_cents - reserved_cents AS available
       FROM credit_facilities WHERE id = CAST(:id AS uuid)`,
      { id: uuid(input.facilityId) },
    )
  ).rows[0];
  if (!f) return new LendingInputError('facility_not_found', `no credit facility ${input.facilityId}`);
  if (f.status !== 'active')
    return new LendingInputError('facility_closed', `facility ${input.facilityId} is closed`);
  return new LendingInputError(
    'over_limit',
    `${input.amountCents} cents exceed what is left of the facility's limit (${f.available} cents, after drawn and reserved amounts)`,
  );
}

/**
 * Enqueues a concluded process's job with its facility: the job's concurrency key, so the jobs of one
 * facility run one at a time. Read from the process row, so the key is the facility's one spelling.
 */
async function enqueueProcessing(tx: Queryable, jobs: Pick<JobTracker, 'enqueueUntyped'>, processId: string) {
  const facilityId = (
    await tx.query<{ facility_id: string }>(
      'SELECT facility_id::text AS facility_id FROM approval_processes WHERE id = CAST(:id AS uuid)',
      { id: uuid(processId) },
    )
  ).rows[0]!.facility_id;
  const [enqueued] = await jobs.enqueueUntyped(
    [
      {
        type: 'approval-processing',
        payload: { processId, facilityId },
        idempotencyKey: `approval:${processId}`,
      },
    ],
    { db: tx },
  );
  return enqueued!.job.id;
}

export interface Vote {
  processId: string;
  voter: string;
  approve: boolean;
  /** Required with a denial. */
  reason?: string;
}

/**
 * Records a committee member's vote and, when it decides the process, concludes it in the same
 * transaction: any member's denial denies at once (releasing the reserved amount); approval needs the
 * policy's number of members. A vote from a non-member, a second vote, a denial without a reason, or any
 * vote once the process is concluded is refused and writes nothing. Runs inside the caller's transaction.
 */
export async function recordVote(tx: Queryable, vote: Vote): Promise<ApprovalOutcome | null> {
  const process = (
    await tx.query<{
      status: ProcessStatus;
      committee_id: string | null;
      required_approvals: number;
      facility_id: string;
      amount_cents: bigint;
      expired: boolean;
    }>(
      `SELECT status, committee_id, required_approvals, facility_id, amount_cents,
              COALESCE(expires_at <= now(), false) AS expired
       FROM approval_processes WHERE id = CAST(:id AS uuid) FOR UPDATE`,
      { id: uuid(vote.processId) },
    )
  ).rows[0];
  if (!process)
    throw new LendingInputError('approval_process_not_found', `no approval process ${vote.processId}`);
  if (process.status !== 'pending') {
    throw new LendingInputError(
      'approval_process_concluded',
      `approval process ${vote.processId} is already ${process.status}`,
    );
  }
  if (process.expired) {
    // The sweep concludes it (and releases the reservation); a late vote decides nothing.
    throw new LendingInputError(
      'approval_process_expired',
      `approval process ${vote.processId} has expired: its policy's time to decide is over`,
    );
  }
  const reason = vote.reason?.trim();
  if (!vote.approve && !reason) throw new LendingInputError('reason_required', 'a denial needs a reason');
  const member = await tx.query(
    'SELECT 1 FROM committee_members WHERE committee_id = CAST(:committee AS uuid) AND member = :voter',
    { committee: process.committee_id === null ? null : uuid(process.committee_id), voter: vote.voter },
  );
  if (member.rowCount === 0) {
    throw new LendingInputError(
      'not_a_member',
      `${vote.voter} is not a member of the committee voting on process ${vote.processId}`,
    );
  }
  const inserted = await tx.query(
    `INSERT INTO approval_votes (process_id, voter, approve, reason) VALUES (CAST(:id AS uuid), :voter, :approve, :reason)
     ON CONFLICT (process_id, voter) DO NOTHING`,
    { id: uuid(vote.processId), voter: vote.voter, approve: vote.approve, reason: reason ?? null },
  );
  if (inserted.rowCount === 0)
    throw new LendingInputError('already_voted', `${vote.voter} has already voted`);
  if (!vote.approve) {
    await tx.query(
      `UPDATE approval_processes SET status = 'denied', concluded_at = now(), denial_reason = :reason
       WHERE id = CAST(:id AS uuid)`,
      { id: uuid(vote.processId), reason: `${vote.voter}: ${reason}` },
    );
    await releaseReservation(tx, process.facility_id, process.amount_cents);
    return 'denied';
  }
  const approvals = (
    await tx.query<{ n: number }>(
      'SELECT count(*)::integer AS n FROM approval_votes WHERE process_id = CAST(:id AS uuid) AND approve',
      { id: uuid(vote.processId) },
    )
  ).rows[0]!.n;
  if (approvals < process.required_approvals) return null;
  await tx.query(
    `UPDATE approval_processes SET status = 'approved', concluded_at = now() WHERE id = CAST(:id AS uuid)`,
    {
      id: uuid(vote.processId),
    },
  );
  return 'approved';
}

async function releaseReservation(tx: Queryable, facilityId: string, amount: bigint): Promise<void> {
  await tx.query(
    'UPDATE credit_facilities SET reserved_cents = reserved_cents - :amount WHERE id = CAST(:id AS uuid)',
    {
      id: uuid(facilityId),
      amount,
    },
  );
}

/**
 * A vote through the public interface: `recordVote`, and when it decides the process, `approval-processing`
 * enqueued in the same transaction (transactional enqueue): if the vote rolls back, so does the job. Its
 * idempotency key makes a retried vote harmless. A denial's job has nothing left to do but is enqueued all
 * the same, so every concluded process has its job.
 */
export async function castVote(
  db: Database,
  jobs: Pick<JobTracker, 'enqueueUntyped'>,
  vote: Vote,
): Promise<{ decided: ApprovalOutcome | null; jobId: string | null }> {
  return db.transaction(async (tx) => {
    const decided = await recordVote(tx, vote);
    if (!decided) return { decided: null, jobId: null };
    return { decided, jobId: await enqueueProcessing(tx, jobs, vote.processId) };
  });
}

/**
 * The initiator of an open process withdraws it: concluded as `withdrawn` with the reason, and its
 * reservation released, in one transaction under the process's lock. Refused, writing nothing, for anyone
 * but the initiator (a process opened without one cannot be withdrawn, only expire), without a reason, or
 * once the process is concluded.
 */
export async function withdrawApprovalProcess(
  db: Database,
  input: { processId: string; by: string; reason: string },
): Promise<void> {
  const reason = input.reason.trim();
  if (reason.length === 0 || reason.length > 1000) {
    throw new LendingInputError('reason_required', 'a withdrawal needs a reason (1-1000 characters)');
  }
  await db.transaction(async (tx) => {
    const process = (
      await tx.query<{
        status: ProcessStatus;
        initiated_by: string | null;
        facility_id: string;
        amount_cents: bigint;
      }>(
        `SELECT status, initiated_by, facility_id, amount_cents FROM approval_processes
         WHERE id = CAST(:id AS uuid) FOR UPDATE`,
        { id: uuid(input.processId) },
      )
    ).rows[0];
    if (!process) {
      throw new LendingInputError('approval_process_not_found', `no approval process ${input.processId}`);
    }
    if (process.status !== 'pending') {
      throw new LendingInputError(
        'approval_process_concluded',
        `approval process ${input.processId} is already ${process.status}`,
      );
    }
    if (process.initiated_by === null || process.initiated_by !== input.by.trim()) {
      throw new LendingInputError(
        'not_the_initiator',
        `only the initiator of approval process ${input.processId} may withdraw it`,
      );
    }
    await tx.query(
      `UPDATE approval_processes SET status = 'withdrawn', concluded_at = now(), withdrawal_reason = :reason
       WHERE id = CAST(:id AS uuid)`,
      { id: uuid(input.processId), reason },
    );
    await releaseReservation(tx, process.facility_id, process.amount_cents);
  });
}

/**
 * Expires up to EXPIRY_BATCH open processes past their `expires_at` and releases their reservations, in
 * one statement: a process a vote or a withdrawal concluded meanwhile is no longer pending when the row
 * lock is granted, so it is skipped. Returns how many it expired.
 */
const EXPIRE_BATCH_SQL = `
WITH due AS (
  SELECT id FROM approval_processes
  WHERE status = 'pending' AND expires_at <= now()
  ORDER BY expires_at, id LIMIT ${EXPIRY_BATCH}
  FOR UPDATE SKIP LOCKED
), expired AS (
  UPDATE approval_processes p SET status = 'expired', concluded_at = now()
  FROM due WHERE p.id = due.id AND p.status = 'pending'
  RETURNING p.facility_id, p.amount_cents
), released AS (
  UPDATE credit_facilities f SET reserved_cents = f.reserved_cents - e.total
  FROM (SELECT facility_id, sum(amount_cents) AS total FROM expired GROUP BY facility_id) e
  WHERE f.id = e.facility_id
  RETURNING f.id
)
SELECT (SELECT count(*) FROM expired)::integer AS expired`;

/** The approval service with its result typed (an extension, so callers passing a signal see it too). */
export interface LendingApprovalService extends ApprovalService {
  /**
   * `facilityId`, when the job's payload names one (its concurrency key), must be the process's facility:
   * a job queued under another facility's key could run beside this facility's other jobs.
   */
  processApproval(processId: string, signal?: AbortSignal, facilityId?: string): Promise<ApprovalResult>;
  expireOverdueProcesses(signal?: AbortSignal): Promise<{ expired: number }>;
}

/**
 * The approval-processing executor's work: carries out the RECORDED outcome, never recomputing it. An
 * approved process whose disbursal is not yet made is disbursed (reserved amount moves to drawn principal)
 * unless the facility is closed, past maturity, the last accepted price is stale (past its `valid_until`),
 * or the facility would be left below its margin-call cover at that price, in which case the process is
 * concluded as failed with the reason and the reservation is released. One transaction under the
 * process's lock, so running it twice changes nothing. Also the scheduled expiry sweep
 * (`expireOverdueProcesses`).
 */
export function createApprovalService(db: Database): LendingApprovalService {
  return {
    async expireOverdueProcesses(signal) {
      let expired = 0;
      for (;;) {
        signal?.throwIfAborted();
        const n = await db.transaction(async (tx) => {
          // Serialised with the bulk facility updates (valuation, accrual): this one also updates many.
          await tx.query(LOCK_FACILITY_BULK_UPDATES_SQL);
          return (await tx.query<{ expired: number }>(EXPIRE_BATCH_SQL)).rows[0]!.expired;
        });
        expired += n;
        if (n < EXPIRY_BATCH) return { expired };
      }
    },

    processApproval: (processId: string, _signal?: AbortSignal, facilityId?: string) =>
      db.transaction(async (tx): Promise<ApprovalResult> => {
        const process = (
          await tx.query<{
            status: ProcessStatus;
            facility_id: string;
            amount_cents: bigint;
          }>(
            `SELECT p.status, p.facility_id, p.amount_cents
             FROM approval_processes p WHERE p.id = CAST(:id AS uuid) FOR UPDATE`,
            { id: uuid(processId) },
          )
        ).rows[0];
        if (!process) throw new PermanentJobError(`no approval process ${processId}`);
        if (facilityId !== undefined && facilityId.toLowerCase() !== process.facility_id.toLowerCase()) {
          throw new PermanentJobError(
            `approval process ${processId} is for facility ${process.facility_id}, not ${facilityId} ` +
              "(the payload's facilityId, under whose key the job ran)",
          );
        }
        if (process.status === 'pending') {
          throw new PermanentJobError(`approval process ${processId} has no recorded outcome yet`);
        }
        // Read after the lock, in a statement of its own: a statement that waited for the lock re-reads
        // the locked row, but everything else it reads is from the snapshot it took before waiting, which
        // misses the disbursal a concurrent delivery committed meanwhile.
        const disbursed = (
          await tx.query<{ disbursed: boolean }>(
            'SELECT EXISTS (SELECT 1 FROM disbursals WHERE process_id = CAST(:id AS uuid)) AS disbursed',
            { id: uuid(processId) },
          )
        ).rows[0]!.disbursed;
        if (process.status !== 'approved' || disbursed) {
          return { processId, action: 'already_concluded', status: process.status, disbursedCents: 0n };
        }
        const check = (
          await tx.query<{
            status: string;
            past_maturity: boolean;
            price_known: boolean;
            price_fresh: boolean;
            price_valued_at: Date | null;
            covered: boolean;
          }>(
            `SELECT f.status, COALESCE(f.maturity_date <= CAST(now() AT TIME ZONE 'UTC' AS date), false) AS past_maturity,
                    pr.cents IS NOT NULL AS price_known,
                    COALESCE(pr.valid_until >= now(), false) AS price_fresh, pr.valued_at AS price_valued_at,
                    COALESCE(div(f.collateral_sats::numeric * pr.cents, 100000000)
                      >= f.margin_call_cvl * (f.drawn_principal_cents + f.accrued_interest_cents + :amount), false) AS covered
             FROM credit_facilities f
             LEFT JOIN LATERAL (SELECT btc_usd_cents AS cents, valid_until, valued_at FROM collateral_valuations
                                ORDER BY valued_at DESC, id DESC LIMIT 1) pr ON true
             WHERE f.id = CAST(:facility AS uuid) FOR UPDATE OF f`,
            { facility: uuid(process.facility_id), amount: process.amount_cents },
          )
        ).rows[0]!;
        const refusal =
          check.status !== 'active'
            ? 'the facility is closed'
            : check.past_maturity
              ? 'the facility has reached its maturity date'
              : !check.price_known
                ? 'no collateral price has been accepted yet'
                : !check.price_fresh
                  ? `the last accepted collateral price (valued at ${check.price_valued_at!.toISOString()}) is ` +
                    "older than the valuation's max age: no disbursal against a stale price"
                  : !check.covered
                    ? 'the disbursal would leave the facility below its margin-call cover'
                    : null;
        if (refusal) {
          await tx.query(
            `UPDATE approval_processes SET status = 'failed', failure_reason = :reason WHERE id = CAST(:id AS uuid)`,
            { id: uuid(processId), reason: refusal },
          );
          await releaseReservation(tx, process.facility_id, process.amount_cents);
          return { processId, action: 'refused', status: 'failed', disbursedCents: 0n, reason: refusal };
        }
        await tx.query(
          `UPDATE credit_facilities
           SET drawn_principal_cents = drawn_principal_cents + :amount, reserved_cents = reserved_cents - :amount
           WHERE id = CAST(:facility AS uuid)`,
          { amount: process.amount_cents, facility: uuid(process.facility_id) },
        );
        await tx.query(
          `INSERT INTO disbursals (process_id, facility_id, amount_cents)
           VALUES (CAST(:id AS uuid), CAST(:facility AS uuid), :amount)`,
          { id: uuid(processId), facility: uuid(process.facility_id), amount: process.amount_cents },
        );
        return { processId, action: 'disbursed', status: 'approved', disbursedCents: process.amount_cents };
      }),
  };
}
