import { type Database, type Queryable, uuid } from '../db/port.js';
import { LendingInputError } from './errors.js';

/**
 * Who approves a disbursal: committees and their members, and each process type's policy (which
 * committee votes, by which rule, how long an open process waits). The processes and their votes are in
 * `approvals.ts`.
 */

/** How long an open process waits for its decision unless its policy says otherwise: a week. */
export const DEFAULT_PROCESS_EXPIRY_SECONDS = 7 * 86_400;

/** How a policy approves: every member, a threshold of members, or the system at once. */
export type ApprovalRule =
  | { kind: 'all-members' }
  | { kind: 'threshold'; approvals: number }
  | { kind: 'auto-approve' };

/** Creates a committee with its members (member ids are the operators' user names). */
export async function createCommittee(
  db: Database,
  input: { name: string; members: readonly string[] },
): Promise<string> {
  const members = [...new Set(input.members.map((m) => m.trim()))];
  if (members.length === 0 || members.some((m) => m.length === 0 || m.length > 200)) {
    throw new LendingInputError(
      'invalid_committee',
      'a committee needs at least one member, each 1-200 characters',
    );
  }
  return db.transaction(async (tx) => {
    const created = await tx.query<{ id: string }>(
      `INSERT INTO committees (name) VALUES (:name) ON CONFLICT (name) DO NOTHING RETURNING id`,
      { name: input.name },
    );
    if (!created.rows[0])
      throw new LendingInputError('invalid_committee', `committee "${input.name}" exists`);
    const id = created.rows[0].id;
    // One statement per member: the Data API takes no array parameters.
    for (const member of members) {
      await tx.query(
        'INSERT INTO committee_members (committee_id, member) VALUES (CAST(:id AS uuid), :member)',
        {
          id: uuid(id),
          member,
        },
      );
    }
    return id;
  });
}

/**
 * Sets the policy of a process type: which committee votes, by which rule, and how long an open process
 * waits for its decision before it expires (`expiresAfterSeconds`, 60 s to a year, default a week). A
 * threshold above the committee's size is refused (such a process could never be approved).
 */
export async function setApprovalPolicy(
  db: Database,
  input: { processType: string; committeeId?: string; rule: ApprovalRule; expiresAfterSeconds?: number },
): Promise<void> {
  const expiry = input.expiresAfterSeconds ?? DEFAULT_PROCESS_EXPIRY_SECONDS;
  if (!Number.isInteger(expiry) || expiry < 60 || expiry > 365 * 86_400) {
    throw new LendingInputError(
      'invalid_policy',
      `a process expires after 60 s to a year, in whole seconds (got ${String(input.expiresAfterSeconds)})`,
    );
  }
  await db.transaction(async (tx) => {
    if (input.rule.kind === 'auto-approve') {
      await upsertPolicy(tx, input.processType, null, 'auto-approve', null, expiry);
      return;
    }
    if (!input.committeeId)
      throw new LendingInputError('invalid_policy', 'a voting policy names its committee');
    const size = (
      await tx.query<{ n: number }>(
        'SELECT count(*)::integer AS n FROM committee_members WHERE committee_id = CAST(:id AS uuid)',
        { id: uuid(input.committeeId) },
      )
    ).rows[0]!.n;
    if (size === 0)
      throw new LendingInputError('invalid_policy', `no committee ${input.committeeId} with members`);
    if (input.rule.kind === 'threshold') {
      const n = input.rule.approvals;
      if (!Number.isInteger(n) || n < 1 || n > size) {
        throw new LendingInputError(
          'invalid_policy',
          `threshold must be 1 to ${size} (the committee's size), got ${n}`,
        );
      }
      await upsertPolicy(tx, input.processType, input.committeeId, 'threshold', n, expiry);
      return;
    }
    await upsertPolicy(tx, input.processType, input.committeeId, 'all-members', null, expiry);
  });
}

async function upsertPolicy(
  tx: Queryable,
  processType: string,
  committeeId: string | null,
  rule: string,
  threshold: number | null,
  expiresAfterSeconds: number,
): Promise<void> {
  await tx.query(
    `INSERT INTO approval_policies (process_type, committee_id, rule, threshold, expires_after_seconds)
     VALUES (:type, CAST(:committee AS uuid), :rule, :threshold, :expiry)
     ON CONFLICT (process_type) DO UPDATE
       SET committee_id = EXCLUDED.committee_id, rule = EXCLUDED.rule, threshold = EXCLUDED.threshold,
           expires_after_seconds = EXCLUDED.expires_after_seconds`,
    {
      type: processType,
      committee: committeeId === null ? null : uuid(committeeId),
      rule,
      threshold,
      expiry: expiresAfterSeconds,
    },
  );
}
