import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { ApprovalRule, ProcessStatus } from '../../shared/domain/approvals.js';
import type { ObligationKind } from '../../shared/domain/obligations.js';
import type { CollateralizationState, PriceBasis } from '../../shared/domain/portfolio.js';
import type { NotificationPayload } from '../../shared/job-types/services.js';
import { JOB_STATUSES } from '../../shared/jobs/model.js';
import { EXECUTION_OUTCOMES } from '../../shared/jobs/outcomes.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * Every column whose CHECK lists its allowed values (`col IN (...)`) against the TypeScript that writes and
 * reads it. The job system's unions are derived from exported `const` arrays; the lending domain's unions
 * are types only, so their values are spelled here and held to the type at compile time (`npm run check`).
 */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
/** Compiles only when `values` holds exactly the members of `U` (one missing: "not assignable to never"). */
function exactly<U extends string>() {
  return <const V extends readonly U[]>(values: V & (Equal<V[number], U> extends true ? unknown : never)) =>
    values;
}

const COLLATERALIZATION_STATES = exactly<CollateralizationState>()([
  'fully-collateralized',
  'under-margin-call',
  'under-liquidation',
  'no-collateral',
  'no-exposure',
]);
const PROCESS_STATUSES = exactly<ProcessStatus>()([
  'pending',
  'approved',
  'denied',
  'failed',
  'withdrawn',
  'expired',
]);
const PRICE_BASES = exactly<PriceBasis>()(['sources', 'sustained-move', 'manual']);
const OBLIGATION_KINDS = exactly<ObligationKind>()(['interest', 'principal']);
const APPROVAL_RULES = exactly<ApprovalRule['kind']>()(['all-members', 'threshold', 'auto-approve']);
const NOTIFICATION_KINDS = exactly<NotificationPayload['kind']>()([
  'payment-reminder',
  'obligation-overdue',
  'margin-call',
  'liquidation-call',
  'collateral-recovered',
]);

/** `table.column` → the values the code knows, and where they live. */
const ENUMS: Record<string, { values: readonly string[]; source: string }> = {
  'jobs.status': { values: JOB_STATUSES, source: 'JOB_STATUSES (shared/jobs/model.ts)' },
  'job_execution_records.outcome': {
    values: EXECUTION_OUTCOMES,
    source: 'EXECUTION_OUTCOMES (shared/jobs/outcomes.ts)',
  },
  'credit_facilities.collateralization_state': {
    values: COLLATERALIZATION_STATES,
    source: 'CollateralizationState (shared/domain/portfolio.ts)',
  },
  'approval_processes.status': {
    values: PROCESS_STATUSES,
    source: 'ProcessStatus (shared/domain/approvals.ts)',
  },
  'approval_policies.rule': {
    values: APPROVAL_RULES,
    source: "ApprovalRule['kind'] (shared/domain/approval-policies.ts)",
  },
  'notifications.kind': {
    values: NOTIFICATION_KINDS,
    source: "NotificationPayload['kind'] (shared/job-types/payloads.ts)",
  },
  'obligations.kind': {
    values: OBLIGATION_KINDS,
    source: 'ObligationKind (shared/domain/obligations.ts)',
  },
  'collateral_valuations.basis': { values: PRICE_BASES, source: 'PriceBasis (shared/domain/portfolio.ts)' },
  // No exported union: the domain's SQL and row types spell these.
  'price_observations.outcome': {
    values: ['accepted', 'refused'],
    source: 'shared/domain/portfolio.ts (no union)',
  },
  'credit_facilities.status': { values: ['active', 'closed'], source: 'the lending SQL (no union)' },
  'notifications.status': {
    values: ['pending', 'sent'],
    source: 'shared/domain/notifications.ts (no union)',
  },
};

let t: TestDatabase;
/** `table.column` → the values its CHECK allows, read from the migrated database's catalog. */
let checked: Map<string, string[]>;

beforeAll(async () => {
  t = await createTestDatabase();
  const res = await t.db.query<{ relname: string; attname: string; def: string }>(
    `SELECT r.relname, a.attname, pg_get_constraintdef(c.oid) AS def
     FROM pg_constraint c
     JOIN pg_class r ON r.oid = c.conrelid
     JOIN pg_namespace n ON n.oid = r.relnamespace
     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
     WHERE n.nspname = 'public' AND c.contype = 'c' AND cardinality(c.conkey) = 1`,
  );
  checked = new Map();
  for (const r of res.rows) {
    // PostgreSQL keeps `col IN ('a', 'b')` as `(col = ANY (ARRAY['a'::text, 'b'::text]))`.
    const m = /^CHECK \(\((\w+) = ANY \(ARRAY\[(.*)\]\)\)\)$/.exec(r.def);
    if (!m || m[1] !== r.attname) continue;
    const values = [...m[2]!.matchAll(/'((?:[^']|'')*)'::text/g)].map((v) => v[1]!.replaceAll("''", "'"));
    checked.set(`${r.relname}.${r.attname}`, values);
  }
});

afterAll(async () => {
  await t?.drop();
});

describe('each CHECK that lists allowed values equals its TypeScript union', () => {
  test.each(Object.entries(ENUMS))('%s', (column, { values, source }) => {
    const allowed = checked.get(column);
    expect(allowed, `no CHECK listing the values of ${column} in the migrated schema`).toBeDefined();
    expect([...values].sort(), `${source} differs from the CHECK on ${column}`).toEqual([...allowed!].sort());
  });

  test('every such CHECK in the schema is held to a union here', () => {
    const unlisted = [...checked.keys()].filter((c) => !(c in ENUMS)).sort();
    expect(unlisted, 'a migration added a CHECK with a list of values: add its union to ENUMS').toEqual([]);
  });
});
