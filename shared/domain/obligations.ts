import { type Database, date, type Queryable, uuid } from '../db/port.js';
import { PermanentJobError } from '../jobs/errors.js';
import { LendingInputError } from './errors.js';
import { formatCents } from './money.js';

/**
 * What a borrower owes, as obligations (Lana's model): each accrual cycle's interest becomes an interest
 * obligation once the cycle's last day has accrued; the drawn principal becomes a principal obligation due
 * at maturity. Each obligation has a due date, an overdue date and a defaulted date, fixed when it is
 * created. A repayment settles the unpaid obligations oldest first.
 */

/** An interest obligation is due this many days after its cycle's last day. */
export const INTEREST_DUE_AFTER_CYCLE_DAYS = 10;
/** Unpaid this many days after its due date, an obligation is overdue (the borrower is told). */
export const OVERDUE_AFTER_DUE_DAYS = 7;
/** Unpaid this many days after its due date, an obligation is defaulted. */
export const DEFAULTED_AFTER_DUE_DAYS = 90;
/** A principal obligation is created this many days before maturity, so its reminder can go out. */
export const PRINCIPAL_OBLIGATION_LEAD_DAYS = 3;

/**
 * At most this many cycles post per facility and run (the latest ones): a catch-up over more months, or
 * interest accrued before obligations existed, goes into the first of them, whose period then starts
 * where the unposted days start. It bounds the work of one batch however long a facility was not posted.
 */
export const POSTED_CYCLES_PER_RUN = 3;

/** The earliest due date among a facility's (row `f`) unpaid obligations. */
const EARLIEST_UNPAID_DUE_SQL = `(SELECT min(o.due_date) FROM obligations o
  WHERE o.facility_id = f.id AND o.settled_at IS NULL)`;

/**
 * Posts the accrual cycles that have ended for the facilities with ids in (:after, :upto], inside the
 * accrual batch's transaction (under its lock). A cycle is a calendar month (UTC) of accrued days, cut
 * short by the facility's last day of accrual (maturity, closing); it posts when its last day has accrued.
 * Its amount carries what the interest balance holds and no obligation yet: the cents of the days up to
 * the cycle's end not yet posted (so a healed day of an earlier cycle, or interest accrued before
 * obligations existed, is posted with the next cycle and never lost). Cycles of 0.00 post no obligation.
 * Each facility's `interest_posted_through` and `next_payment_due` move with it.
 */
export function postInterestCyclesSql(lastOpenDaySql: string): string {
  return `
WITH facility AS (
  SELECT f.id, f.accrued_interest_cents,
         COALESCE(f.interest_posted_through + 1, CAST(f.created_at AT TIME ZONE 'UTC' AS date)) AS from_day,
         ${lastOpenDaySql} AS stop_day,
         last_accrued.accrual_date AS last_accrued
  FROM credit_facilities f
  JOIN LATERAL (
    SELECT a.accrual_date FROM interest_accruals a WHERE a.facility_id = f.id
    ORDER BY a.accrual_date DESC LIMIT 1
  ) last_accrued ON true
  WHERE f.id > CAST(:after AS uuid) AND f.id <= CAST(:upto AS uuid)
    AND (f.status = 'active' OR f.closed_at IS NOT NULL)
), cycles AS (
  SELECT c.* FROM (
    SELECT fa.id, fa.accrued_interest_cents, fa.last_accrued,
           CASE WHEN m.month = first_month.month THEN fa.from_day ELSE CAST(m.month AS date) END AS period_start,
           LEAST(CAST(m.month + interval '1 month' AS date) - 1, fa.stop_day) AS period_end
    FROM facility fa
    CROSS JOIN LATERAL (
      SELECT date_trunc('month', GREATEST(CAST(fa.from_day AS timestamp),
                                          CAST(fa.last_accrued AS timestamp) - interval '${POSTED_CYCLES_PER_RUN - 1} months'))
               AS month
    ) first_month
    CROSS JOIN LATERAL generate_series(first_month.month, date_trunc('month', CAST(fa.last_accrued AS timestamp)),
                                       interval '1 month') m(month)
    WHERE fa.from_day <= fa.last_accrued
  ) c
  WHERE c.period_start <= c.period_end AND c.period_end <= c.last_accrued
), unposted AS (
  SELECT c.*,
         c.accrued_interest_cents
         - COALESCE((SELECT sum(o.amount_cents - o.paid_cents) FROM obligations o
                     WHERE o.facility_id = c.id AND o.kind = 'interest' AND o.settled_at IS NULL), 0)
         - COALESCE((SELECT sum(a.interest_cents) FROM interest_accruals a
                     WHERE a.facility_id = c.id AND a.accrual_date > c.period_end), 0) AS through_end
  FROM cycles c
), amounts AS (
  SELECT u.*, u.through_end - COALESCE(lag(u.through_end) OVER (PARTITION BY u.id ORDER BY u.period_end), 0)
                AS amount
  FROM unposted u
), posted AS (
  INSERT INTO obligations (facility_id, kind, period_start, period_end, amount_cents, due_date, overdue_date,
                           defaulted_date)
  SELECT id, 'interest', period_start, period_end, amount, period_end + ${INTEREST_DUE_AFTER_CYCLE_DAYS},
         period_end + ${INTEREST_DUE_AFTER_CYCLE_DAYS + OVERDUE_AFTER_DUE_DAYS},
         period_end + ${INTEREST_DUE_AFTER_CYCLE_DAYS + DEFAULTED_AFTER_DUE_DAYS}
  FROM amounts WHERE amount > 0
  ON CONFLICT (facility_id, period_end) WHERE kind = 'interest' DO NOTHING
  RETURNING facility_id, due_date
), per_facility AS (
  SELECT a.id, max(a.period_end) AS posted_through, (SELECT min(p.due_date) FROM posted p WHERE p.facility_id = a.id) AS first_due
  FROM amounts a GROUP BY a.id
), moved AS (
  UPDATE credit_facilities f
  SET interest_posted_through = pf.posted_through,
      next_payment_due = LEAST(${EARLIEST_UNPAID_DUE_SQL}, pf.first_due)
  FROM per_facility pf
  WHERE f.id = pf.id AND f.id > CAST(:after AS uuid) AND f.id <= CAST(:upto AS uuid)
)
SELECT (SELECT count(*) FROM posted)::integer AS obligations`;
}

/**
 * The principal obligations for facilities maturing by `:horizon`: the drawn principal not yet under an
 * unpaid principal obligation, due at maturity (a disbursal after the obligation was created adds one for
 * the difference). Paying a principal obligation lowers the drawn principal by as much, so what is
 * covered never changes by a repayment.
 */
const POST_PRINCIPAL_SQL = `
WITH maturing AS (
  SELECT f.id, f.maturity_date,
         f.drawn_principal_cents - COALESCE((SELECT sum(o.amount_cents - o.paid_cents) FROM obligations o
           WHERE o.facility_id = f.id AND o.kind = 'principal' AND o.settled_at IS NULL), 0) AS uncovered
  FROM credit_facilities f
  WHERE f.status = 'active' AND f.maturity_date <= CAST(:horizon AS date) AND f.drawn_principal_cents > 0
), posted AS (
  INSERT INTO obligations (facility_id, kind, amount_cents, due_date, overdue_date, defaulted_date)
  SELECT id, 'principal', uncovered, maturity_date, maturity_date + ${OVERDUE_AFTER_DUE_DAYS},
         maturity_date + ${DEFAULTED_AFTER_DUE_DAYS}
  FROM maturing WHERE uncovered > 0
  RETURNING facility_id, due_date
), moved AS (
  UPDATE credit_facilities f SET next_payment_due = LEAST(${EARLIEST_UNPAID_DUE_SQL}, p.due_date)
  FROM posted p WHERE f.id = p.facility_id
)
SELECT count(*)::integer AS obligations FROM posted`;

/** Creates the principal obligations of facilities maturing within the lead time of `day`. Idempotent. */
export async function postPrincipalObligations(db: Database, day: string): Promise<number> {
  return db.transaction(async (tx) => {
    // One poster at a time: two at once would both see the principal uncovered.
    await tx.query("SELECT pg_advisory_xact_lock(hashtext('lana:obligations:principal'))");
    const horizon = (
      await tx.query<{ horizon: string }>(
        `SELECT CAST(CAST(:day AS date) + ${PRINCIPAL_OBLIGATION_LEAD_DAYS} AS text) AS horizon`,
        { day: date(day) },
      )
    ).rows[0]!.horizon;
    return (await tx.query<{ obligations: number }>(POST_PRINCIPAL_SQL, { horizon: date(horizon) })).rows[0]!
      .obligations;
  });
}

export type ObligationKind = 'interest' | 'principal';
export type ObligationStatus = 'not-yet-due' | 'due' | 'overdue' | 'defaulted' | 'paid';

export interface Obligation {
  id: string;
  kind: ObligationKind;
  periodStart: string | null;
  periodEnd: string | null;
  amountCents: bigint;
  paidCents: bigint;
  outstandingCents: bigint;
  dueDate: string;
  overdueDate: string;
  defaultedDate: string;
  status: ObligationStatus;
}

/** Where an obligation stands on `day` (UTC). */
export function obligationStatus(
  o: { outstandingCents: bigint; dueDate: string; overdueDate: string; defaultedDate: string },
  day: string,
): ObligationStatus {
  if (o.outstandingCents === 0n) return 'paid';
  if (day >= o.defaultedDate) return 'defaulted';
  if (day >= o.overdueDate) return 'overdue';
  if (day >= o.dueDate) return 'due';
  return 'not-yet-due';
}

interface ObligationRow {
  [k: string]: unknown;
  id: string;
  kind: ObligationKind;
  period_start: string | null;
  period_end: string | null;
  amount_cents: bigint;
  paid_cents: bigint;
  due_date: string;
  overdue_date: string;
  defaulted_date: string;
  today: string;
}

/** Oldest first: by due date, interest before principal, then by cycle. The order repayments settle in. */
const OLDEST_FIRST = `ORDER BY o.due_date, CASE o.kind WHEN 'interest' THEN 0 ELSE 1 END, o.period_end, o.id`;

const OBLIGATION_COLUMNS = `o.id, o.kind, o.period_start, o.period_end, o.amount_cents, o.paid_cents, o.due_date,
  o.overdue_date, o.defaulted_date, CAST(CAST(now() AT TIME ZONE 'UTC' AS date) AS text) AS today`;

function toObligation(r: ObligationRow): Obligation {
  const outstandingCents = r.amount_cents - r.paid_cents;
  const o = {
    id: r.id,
    kind: r.kind,
    periodStart: r.period_start,
    periodEnd: r.period_end,
    amountCents: r.amount_cents,
    paidCents: r.paid_cents,
    outstandingCents,
    dueDate: r.due_date,
    overdueDate: r.overdue_date,
    defaultedDate: r.defaulted_date,
  };
  return { ...o, status: obligationStatus(o, r.today) };
}

/** A facility's obligations, oldest first (settled ones too unless `unpaidOnly`). */
export async function listObligations(
  db: Queryable,
  facilityId: string,
  options: { unpaidOnly?: boolean } = {},
): Promise<Obligation[]> {
  const rows = await db.query<ObligationRow>(
    `SELECT ${OBLIGATION_COLUMNS} FROM obligations o
     WHERE o.facility_id = CAST(:facility AS uuid) ${options.unpaidOnly ? 'AND o.settled_at IS NULL' : ''}
     ${OLDEST_FIRST}`,
    { facility: uuid(facilityId) },
  );
  return rows.rows.map(toObligation);
}

export interface Repayment {
  facilityId: string;
  amountCents: bigint;
  /** The payment's own reference (1-200 characters): a second repayment with it writes nothing. */
  reference?: string;
}

export interface RepaymentResult {
  paymentId: string;
  facilityId: string;
  amountCents: bigint;
  /** False when a payment with this reference was already recorded (nothing written this time). */
  recorded: boolean;
  allocations: { obligationId: string; kind: ObligationKind; dueDate: string; amountCents: bigint }[];
  interestPaidCents: bigint;
  principalPaidCents: bigint;
  /** What the facility still owes on its obligations after this payment. */
  outstandingCents: bigint;
  nextPaymentDue: string | null;
}

/**
 * Records a repayment and settles the facility's unpaid obligations oldest first (`OLDEST_FIRST`), in one
 * transaction under the facility's lock. Interest paid lowers the interest balance, principal paid the
 * drawn principal (recorded as a principal change, so accrual applies it from now on only), and
 * `next_payment_due` becomes the earliest unpaid due date. Refused, writing nothing: an amount that is not
 * positive, an unknown facility, a facility that owes nothing, or more than it owes (an overpayment).
 */
export async function recordRepayment(db: Database, input: Repayment): Promise<RepaymentResult> {
  if (typeof input.amountCents !== 'bigint' || input.amountCents <= 0n) {
    throw new LendingInputError('invalid_amount', 'a repayment must be a positive amount');
  }
  const reference = input.reference?.trim();
  if (reference !== undefined && (reference.length === 0 || reference.length > 200)) {
    throw new LendingInputError('invalid_reference', 'a payment reference is 1 to 200 characters');
  }
  return db.transaction(async (tx) => {
    const facility = (
      await tx.query<{ id: string }>(
        'SELECT id FROM credit_facilities WHERE id = CAST(:id AS uuid) FOR UPDATE',
        { id: uuid(input.facilityId) },
      )
    ).rows[0];
    if (!facility)
      throw new LendingInputError('facility_not_found', `no credit facility ${input.facilityId}`);
    if (reference !== undefined) {
      const earlier = await previousPayment(tx, reference);
      if (earlier) {
        if (earlier.facilityId !== input.facilityId || earlier.amountCents !== input.amountCents) {
          throw new LendingInputError(
            'invalid_reference',
            `payment reference "${reference}" was already used for another payment`,
          );
        }
        return earlier;
      }
    }
    const unpaid = (
      await tx.query<ObligationRow>(
        `SELECT ${OBLIGATION_COLUMNS} FROM obligations o
         WHERE o.facility_id = CAST(:facility AS uuid) AND o.settled_at IS NULL ${OLDEST_FIRST} FOR UPDATE`,
        { facility: uuid(input.facilityId) },
      )
    ).rows.map(toObligation);
    const owed = unpaid.reduce((n, o) => n + o.outstandingCents, 0n);
    if (owed === 0n) {
      throw new LendingInputError('nothing_owed', `facility ${input.facilityId} has no unpaid obligation`);
    }
    if (input.amountCents > owed) {
      throw new LendingInputError(
        'overpayment',
        `${formatCents(input.amountCents)} is more than the ${formatCents(owed)} facility ${input.facilityId} owes`,
      );
    }
    const paymentId = (
      await tx.query<{ id: string }>(
        `INSERT INTO payments (facility_id, amount_cents, reference)
         VALUES (CAST(:facility AS uuid), :amount, :reference) RETURNING id`,
        { facility: uuid(input.facilityId), amount: input.amountCents, reference: reference ?? null },
      )
    ).rows[0]!.id;
    let left = input.amountCents;
    let interest = 0n;
    let principal = 0n;
    const allocations: RepaymentResult['allocations'] = [];
    for (const o of unpaid) {
      if (left === 0n) break;
      const pay = o.outstandingCents < left ? o.outstandingCents : left;
      left -= pay;
      if (o.kind === 'interest') interest += pay;
      else principal += pay;
      allocations.push({ obligationId: o.id, kind: o.kind, dueDate: o.dueDate, amountCents: pay });
      await tx.query(
        `UPDATE obligations SET paid_cents = paid_cents + :pay,
                settled_at = CASE WHEN paid_cents + :pay = amount_cents THEN now() END
         WHERE id = CAST(:id AS uuid)`,
        { id: uuid(o.id), pay },
      );
      await tx.query(
        `INSERT INTO payment_allocations (payment_id, obligation_id, amount_cents)
         VALUES (CAST(:payment AS uuid), CAST(:obligation AS uuid), :pay)`,
        { payment: uuid(paymentId), obligation: uuid(o.id), pay },
      );
    }
    const after = (
      await tx.query<{ next_payment_due: string | null }>(
        `UPDATE credit_facilities f
         SET accrued_interest_cents = accrued_interest_cents - :interest,
             drawn_principal_cents = drawn_principal_cents - :principal,
             next_payment_due = ${EARLIEST_UNPAID_DUE_SQL}
         WHERE f.id = CAST(:facility AS uuid)
         RETURNING next_payment_due`,
        { facility: uuid(input.facilityId), interest, principal },
      )
    ).rows[0]!;
    return {
      paymentId,
      facilityId: input.facilityId,
      amountCents: input.amountCents,
      recorded: true,
      allocations,
      interestPaidCents: interest,
      principalPaidCents: principal,
      outstandingCents: owed - input.amountCents,
      nextPaymentDue: after.next_payment_due,
    };
  });
}

async function previousPayment(tx: Queryable, reference: string): Promise<RepaymentResult | null> {
  const payment = (
    await tx.query<{ id: string; facility_id: string; amount_cents: bigint }>(
      'SELECT id, facility_id, amount_cents FROM payments WHERE reference = :reference',
      { reference },
    )
  ).rows[0];
  if (!payment) return null;
  const allocations = (
    await tx.query<{ obligation_id: string; kind: ObligationKind; due_date: string; amount_cents: bigint }>(
      `SELECT pa.obligation_id, o.kind, o.due_date, pa.amount_cents
       FROM payment_allocations pa JOIN obligations o ON o.id = pa.obligation_id
       WHERE pa.payment_id = CAST(:id AS uuid) ${OLDEST_FIRST}`,
      { id: uuid(payment.id) },
    )
  ).rows;
  const state = (
    await tx.query<{ owed: bigint; next_payment_due: string | null }>(
      `SELECT COALESCE((SELECT sum(o.amount_cents - o.paid_cents) FROM obligations o
                        WHERE o.facility_id = f.id AND o.settled_at IS NULL), 0)::bigint AS owed,
              f.next_payment_due
       FROM credit_facilities f WHERE f.id = CAST(:facility AS uuid)`,
      { facility: uuid(payment.facility_id) },
    )
  ).rows[0]!;
  const sum = (kind: ObligationKind) =>
    allocations.filter((a) => a.kind === kind).reduce((n, a) => n + a.amount_cents, 0n);
  return {
    paymentId: payment.id,
    facilityId: payment.facility_id,
    amountCents: payment.amount_cents,
    recorded: false,
    allocations: allocations.map((a) => ({
      obligationId: a.obligation_id,
      kind: a.kind,
      dueDate: a.due_date,
      amountCents: a.amount_cents,
    })),
    interestPaidCents: sum('interest'),
    principalPaidCents: sum('principal'),
    outstandingCents: state.owed,
    nextPaymentDue: state.next_payment_due,
  };
}

/** A reminder before a due date, or the notice that what was due on it is now overdue. */
export interface ObligationNotice {
  kind: 'payment-reminder' | 'obligation-overdue';
  facilityId: string;
  dueDate: string;
}

/**
 * The notice for what a facility owes on a due date, from its unpaid obligations at the time it is sent;
 * null when nothing due that day is unpaid any more (a settled obligation is never reminded).
 */
export async function renderObligationNotice(
  db: Queryable,
  n: ObligationNotice,
): Promise<{ subject: string; body: string } | null> {
  const rows = (
    await db.query<{ kind: ObligationKind; owed: bigint; defaulted_date: string }>(
      `SELECT o.kind, sum(o.amount_cents - o.paid_cents)::bigint AS owed, CAST(min(o.defaulted_date) AS text) AS defaulted_date
       FROM obligations o
       WHERE o.facility_id = CAST(:facility AS uuid) AND o.due_date = CAST(:due AS date) AND o.settled_at IS NULL
       GROUP BY o.kind ORDER BY o.kind`,
      { facility: uuid(n.facilityId), due: date(n.dueDate) },
    )
  ).rows;
  const total = rows.reduce((sum, r) => sum + r.owed, 0n);
  if (total === 0n) return null;
  const lines = rows.map((r) => `  ${r.kind}: USD ${formatCents(r.owed)}`);
  if (n.kind === 'payment-reminder') {
    return {
      subject: `Payment reminder: USD ${formatCents(total)} due ${n.dueDate}`,
      body: [
        `Your credit facility ${n.facilityId} has USD ${formatCents(total)} due on ${n.dueDate}:`,
        ...lines,
        'Please make sure funds are available. Thank you.',
      ].join('\n'),
    };
  }
  return {
    subject: `Payment overdue: USD ${formatCents(total)} was due ${n.dueDate}`,
    body: [
      `USD ${formatCents(total)} of your credit facility ${n.facilityId} was due on ${n.dueDate} and is unpaid:`,
      ...lines,
      `Please pay it now: unpaid on ${rows.map((r) => r.defaulted_date).sort()[0]}, it is in default.`,
    ].join('\n'),
  };
}

/** Thrown by the sweep for a day that has not begun by the database clock. */
export function futureSweepError(day: string): PermanentJobError {
  return new PermanentJobError(
    `the reminder sweep for ${day} cannot run before that day begins (UTC): reminders would go out early`,
  );
}
