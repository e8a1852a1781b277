import { type Database, type Queryable, uuid } from '../db/port.js';
import type { ApprovalService } from '../job-types/services.js';
import { PermanentJobError } from '../jobs/errors.js';
import type { JobTracker } from '../jobs/tracker.js';
import { LendingInputError } from './errors.js';

export type ApprovalOutcome = 'approved' | 'denied';

export interface ApprovalResult {
  processId: string;
  /** What this run did: concluded the process, or nothing (already concluded). */
  action: 'concluded' | 'already_concluded';
  status: ApprovalOutcome;
  disbursedCents: bigint;
}

interface ProcessRow {
  [k: string]: unknown;
  id: string;
  facility_id: string;
  amount_cents: bigint;
  committee_size: number;
  required_approvals: number;
  status: 'pending' | ApprovalOutcome;
  approvals: number;
  denials: number;
}

const PROCESS_WITH_VOTES = `
SELECT p.id, p.facility_id, p.amount_cents, p.committee_size, p.required_approvals, p.status,
       count(v.*) FILTER (WHERE v.approve)::integer AS approvals,
       count(v.*) FILTER (WHERE NOT v.approve)::integer AS denials
FROM approval_processes p LEFT JOIN approval_votes v ON v.process_id = p.id
WHERE p.id = CAST(:id AS uuid)
GROUP BY p.id`;

/** Approved once enough approve; denied once the remaining voters can no longer reach the threshold. */
export function decision(
  p: Pick<ProcessRow, 'approvals' | 'denials' | 'committee_size' | 'required_approvals'>,
) {
  if (p.approvals >= p.required_approvals) return 'approved' as const;
  if (p.committee_size - p.denials < p.required_approvals) return 'denied' as const;
  return null;
}

export async function createApprovalProcess(
  db: Queryable,
  input: { facilityId: string; amountCents: bigint; committeeSize: number; requiredApprovals: number },
): Promise<string> {
  const res = await db.query<{ id: string }>(
    `INSERT INTO approval_processes (facility_id, amount_cents, committee_size, required_approvals)
     VALUES (CAST(:facility AS uuid), :amount, :committee, :required) RETURNING id`,
    {
      facility: uuid(input.facilityId),
      amount: input.amountCents,
      committee: input.committeeSize,
      required: input.requiredApprovals,
    },
  );
  return res.rows[0]!.id;
}

/**
 * Records a committee member's vote. The vote that decides the process enqueues `approval-processing`
 * in the same transaction (transactional enqueue): if the vote rolls back, so does the job, and the job
 * never runs for a vote that was not recorded. Its idempotency key makes a retried vote harmless.
 */
export async function castVote(
  db: Database,
  jobs: Pick<JobTracker, 'enqueueUntyped'>,
  vote: { processId: string; voter: string; approve: boolean },
): Promise<{ decided: ApprovalOutcome | null; jobId: string | null }> {
  return db.transaction(async (tx) => {
    const locked = await tx.query<{ status: string }>(
      'SELECT status FROM approval_processes WHERE id = CAST(:id AS uuid) FOR UPDATE',
      { id: uuid(vote.processId) },
    );
    if (!locked.rows[0])
      throw new LendingInputError('approval_process_not_found', `no approval process ${vote.processId}`);
    if (locked.rows[0].status !== 'pending') {
      throw new LendingInputError(
        'approval_process_concluded',
        `approval process ${vote.processId} is already ${locked.rows[0].status}`,
      );
    }
    const inserted = await tx.query(
      `INSERT INTO approval_votes (process_id, voter, approve) VALUES (CAST(:id AS uuid), :voter, :approve)
       ON CONFLICT (process_id, voter) DO NOTHING`,
      { id: uuid(vote.processId), voter: vote.voter, approve: vote.approve },
    );
    if (inserted.rowCount === 0)
      throw new LendingInputError('already_voted', `${vote.voter} has already voted`);
    const process = (await tx.query<ProcessRow>(PROCESS_WITH_VOTES, { id: uuid(vote.processId) })).rows[0]!;
    const decided = decision(process);
    if (!decided) return { decided: null, jobId: null };
    const [enqueued] = await jobs.enqueueUntyped(
      [
        {
          type: 'approval-processing',
          payload: { processId: vote.processId },
          idempotencyKey: `approval:${vote.processId}`,
        },
      ],
      { db: tx },
    );
    return { decided, jobId: enqueued!.job.id };
  });
}

/**
 * The approval-processing executor's work: concludes a process whose votes are in and, when approved,
 * executes the disbursal (the facility's drawn principal grows by the amount). One transaction, guarded by
 * the process status, so running it twice or on a concluded process changes nothing.
 */
/** The approval service with its result typed (an extension, so callers passing a signal see it too). */
export interface LendingApprovalService extends ApprovalService {
  processApproval(processId: string, signal?: AbortSignal): Promise<ApprovalResult>;
}

export function createApprovalService(db: Database): LendingApprovalService {
  return {
    processApproval: (processId: string) =>
      db.transaction(async (tx) => {
        await tx.query('SELECT 1 FROM approval_processes WHERE id = CAST(:id AS uuid) FOR UPDATE', {
          id: uuid(processId),
        });
        const process = (await tx.query<ProcessRow>(PROCESS_WITH_VOTES, { id: uuid(processId) })).rows[0];
        if (!process) throw new PermanentJobError(`no approval process ${processId}`);
        if (process.status !== 'pending') {
          return { processId, action: 'already_concluded', status: process.status, disbursedCents: 0n };
        }
        const outcome = decision(process);
        if (!outcome) {
          throw new PermanentJobError(
            `approval process ${processId} is undecided (${process.approvals} of ${process.required_approvals} approvals)`,
          );
        }
        await tx.query(
          `UPDATE approval_processes SET status = :status, concluded_at = now() WHERE id = CAST(:id AS uuid)`,
          { status: outcome, id: uuid(processId) },
        );
        if (outcome === 'denied')
          return { processId, action: 'concluded', status: outcome, disbursedCents: 0n };
        const drawn = await tx.query(
          `UPDATE credit_facilities
           SET drawn_principal_cents = drawn_principal_cents + :amount
           WHERE id = CAST(:facility AS uuid) AND status = 'active'
             AND drawn_principal_cents + :amount <= facility_limit_cents`,
          { amount: process.amount_cents, facility: uuid(process.facility_id) },
        );
        if (drawn.rowCount === 0) {
          // Rolls the whole transaction back: the process stays pending for an operator to look at.
          throw new PermanentJobError(
            `disbursal of process ${processId} exceeds the facility's limit or the facility is closed`,
          );
        }
        await tx.query(
          `INSERT INTO disbursals (process_id, facility_id, amount_cents)
           VALUES (CAST(:id AS uuid), CAST(:facility AS uuid), :amount)`,
          { id: uuid(processId), facility: uuid(process.facility_id), amount: process.amount_cents },
        );
        return { processId, action: 'concluded', status: outcome, disbursedCents: process.amount_cents };
      }),
  };
}
