import { type Database, date } from '../db/port.js';
import type { JobTracker } from '../jobs/tracker.js';
import { createApprovalProcess, createCommittee, setApprovalPolicy } from './approvals.js';
import { addDays, utcDay } from './money.js';

export interface DemoPortfolio {
  facilityIds: string[];
  approvalProcessId: string;
  paymentDueDate: string;
}

/**
 * The demo's portfolio, a few credit facilities: different rates and collateral, one closed, one maturing
 * in three days (today's reminder sweep makes its principal an obligation and reminds of it), one thinly
 * collateralised (so a valuation at today's price triggers a margin call), plus an approval process for a
 * disbursal awaiting its votes.
 */
export async function createDemoPortfolio(
  db: Database,
  jobs: Pick<JobTracker, 'enqueueUntyped'>,
  today = utcDay(new Date()),
): Promise<DemoPortfolio> {
  await ensureDemoGovernance(db);
  const created = await db.transaction(async (tx) => {
    const dueDate = addDays(today, 3);
    const rows = await tx.query<{ id: string }>(
      `INSERT INTO credit_facilities (customer_email, status, facility_limit_cents, drawn_principal_cents,
                                      annual_rate, collateral_sats, maturity_date, created_at)
       SELECT * FROM (VALUES
         ('alice@example.com', 'active', 10000000::bigint, 5000000::bigint, 0.120000::numeric, 15000000::bigint, CAST(:due AS date), now() - interval '30 days'),
         ('bob@example.com',   'active', 50000000, 20000000, 0.085000, 300000000, NULL, now() - interval '90 days'),
         ('carol@example.com', 'active', 20000000, 0, 0.100000, 5000000, NULL, now() - interval '10 days'),
         ('dave@example.com',  'closed', 5000000, 0, 0.150000, 0, NULL, now() - interval '400 days')
       ) AS f(customer_email, status, facility_limit_cents, drawn_principal_cents, annual_rate, collateral_sats,
              maturity_date, created_at)
       RETURNING id`,
      { due: date(dueDate) },
    );
    return { facilityIds: rows.rows.map((r) => r.id), paymentDueDate: dueDate };
  });
  const approvalProcessId = await createApprovalProcess(db, jobs, {
    facilityId: created.facilityIds[2]!,
    amountCents: 2_500_000n,
  });
  return { ...created, approvalProcessId };
}

/** The demo's credit committee (three members) and its disbursal policy (two approvals), unless set. */
export const DEMO_COMMITTEE = ['risk-officer', 'credit-committee-chair', 'cfo'] as const;

export async function ensureDemoGovernance(db: Database): Promise<void> {
  const policy = await db.query("SELECT 1 FROM approval_policies WHERE process_type = 'disbursal'");
  if (policy.rowCount > 0) return;
  const existing = await db.query<{ id: string }>(
    "SELECT id FROM committees WHERE name = 'credit-committee'",
  );
  const committeeId =
    existing.rows[0]?.id ??
    (await createCommittee(db, { name: 'credit-committee', members: DEMO_COMMITTEE }));
  await setApprovalPolicy(db, {
    processType: 'disbursal',
    committeeId,
    rule: { kind: 'threshold', approvals: 2 },
  });
}
