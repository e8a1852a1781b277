import { type Database, date, type SqlParams, uuid } from '../db/port.js';
import type { NotificationPayload, NotificationService } from '../job-types/services.js';
import { PermanentJobError } from '../jobs/errors.js';
import { formatCents } from './money.js';
import type { Notifier } from './notifier.js';

interface FacilityRow {
  [k: string]: unknown;
  status: 'active' | 'closed';
  customer_email: string;
  drawn_principal_cents: bigint;
  accrued_interest_cents: bigint;
  collateral_to_loan_ratio: string | null;
  collateral_value_cents: bigint | null;
}

export interface Rendered {
  subject: string;
  body: string;
}

type ReminderPayload = Extract<NotificationPayload, { kind: 'payment-reminder' }>;
type TransitionPayload = Exclude<NotificationPayload, ReminderPayload>;

/** The payment reminder's template. Plain text: these go to borrowers' inboxes. */
export function renderNotification(n: ReminderPayload, f: FacilityRow): Rendered {
  return {
    subject: `Payment reminder: due ${n.dueDate}`,
    body: [
      `Your credit facility ${n.facilityId} has a payment due on ${n.dueDate}.`,
      `Outstanding principal: USD ${formatCents(f.drawn_principal_cents)}.`,
      `Interest accrued to date: USD ${formatCents(f.accrued_interest_cents)}.`,
      'Please make sure funds are available. Thank you.',
    ].join('\n'),
  };
}

/** A collateralization transition with the figures stored when it happened (NULL before migration 0105). */
export interface TransitionRow {
  [k: string]: unknown;
  id: string;
  from_state: string;
  to_state: string;
  at: Date;
  cover: string | null;
  btc_usd_cents: bigint | null;
  collateral_sats: bigint | null;
  collateral_value_cents: bigint | null;
  principal_cents: bigint | null;
  interest_cents: bigint | null;
  /** The levels as whole-number percentages, e.g. "125" or "112.5". */
  margin_call_percent: string | null;
  liquidation_percent: string | null;
}

/** 150000000n → "1.50000000" */
function formatSats(sats: bigint): string {
  return `${sats / 100_000_000n}.${String(sats % 100_000_000n).padStart(8, '0')}`;
}

/**
 * A transition notice's text, entirely from the transition: the same words whenever it is delivered,
 * dated with the moment it describes (a notice delivered after a later change still says what happened
 * then, and when).
 */
export function renderTransitionNotice(
  kind: TransitionPayload['kind'],
  facilityId: string,
  t: TransitionRow,
): Rendered {
  const day = t.at.toISOString().slice(0, 10);
  const when = `${day} at ${t.at.toISOString().slice(11, 16)} UTC`;
  const cover = t.cover ?? 'n/a';
  const valued =
    t.btc_usd_cents !== null && t.collateral_value_cents !== null
      ? [
          `On ${when}, at a bitcoin price of USD ${formatCents(t.btc_usd_cents)}, the collateral of your credit facility ${facilityId}`,
          `(${t.collateral_sats === null ? '' : `${formatSats(t.collateral_sats)} BTC, `}valued at USD ${formatCents(t.collateral_value_cents)}) covered ${cover} times the total outstanding`,
          `(principal USD ${formatCents(t.principal_cents ?? 0n)} plus interest USD ${formatCents(t.interest_cents ?? 0n)}).`,
        ]
      : [
          `On ${when}, the collateral of your credit facility ${facilityId} covered ${cover} times the total outstanding.`,
        ];
  const asOf = `This notice describes your facility as of ${when}; any later change is notified separately.`;
  const level = (percent: string | null, name: string) =>
    percent === null ? `its ${name} level` : `its ${name} level of ${percent} %`;
  if (kind === 'liquidation-call') {
    return {
      subject: `Liquidation warning (${day}): collateral at the liquidation level`,
      body: [
        ...valued,
        `That is below ${level(t.liquidation_percent, 'liquidation')}: the collateral may be partly liquidated.`,
        'Add collateral or repay part of the loan now.',
        asOf,
      ].join('\n'),
    };
  }
  if (kind === 'collateral-recovered') {
    return {
      subject: `Collateral restored (${day}): fully collateralized again`,
      body: [
        ...valued,
        `That is above ${level(t.margin_call_percent, 'margin-call')} again: your facility is fully collateralized.`,
        'No action is needed.',
        asOf,
      ].join('\n'),
    };
  }
  return {
    subject: `Margin call (${day}): collateral below the required level`,
    body: [
      ...valued,
      `That is below ${level(t.margin_call_percent, 'margin-call')}.`,
      'Please add collateral or repay part of the loan to restore the required cover.',
      asOf,
    ].join('\n'),
  };
}

export type SendResult =
  | { outcome: 'sent' | 'already_sent'; notificationId: string; messageId: string | null }
  /** The facility was closed before the notice went out: nothing recorded, nothing sent. */
  | { outcome: 'skipped_facility_closed'; notificationId: null; messageId: null };

/** The notification service with its result typed (an extension, so callers passing a signal see it too). */
export interface LendingNotificationService extends NotificationService {
  send(n: NotificationPayload, signal?: AbortSignal): Promise<SendResult>;
}

const TRANSITION_COLUMNS = `t.id, t.from_state, t.to_state, t.at, CAST(t.cover AS text) AS cover, t.btc_usd_cents,
  t.collateral_sats, t.collateral_value_cents, t.principal_cents, t.interest_cents,
  CAST(trim_scale(t.margin_call_cvl * 100) AS text) AS margin_call_percent,
  CAST(trim_scale(t.liquidation_cvl * 100) AS text) AS liquidation_percent`;

/** The notice kind a transition deserves (as the valuation enqueues it). */
const NOTICE_KIND_SQL = `CASE WHEN t.to_state = 'under-liquidation' THEN 'liquidation-call'
  WHEN t.to_state = 'under-margin-call' AND t.from_state <> 'under-liquidation' THEN 'margin-call'
  WHEN t.to_state = 'fully-collateralized' AND t.from_state IN ('under-margin-call', 'under-liquidation')
    THEN 'collateral-recovered' END`;

/**
 * Records the notification in the outbox and then delivers what is not yet sent. A payment reminder is
 * unique per facility and due date; a collateralization notice per transition (two margin calls on one
 * day are two notices), its text rendered from the transition's stored figures. A retried or duplicated
 * job finds the row already `sent` and sends nothing. The one gap no outbox closes: a crash after the
 * provider accepted the message and before the row is marked sent re-sends it once on retry (the outbox
 * key travels with the message so it can be spotted).
 */
export function createNotificationService(db: Database, notifier: Notifier): LendingNotificationService {
  /** The outbox row for this notice, under its lock: a concurrent duplicate waits, then finds it sent. */
  async function deliver(
    where: string,
    params: SqlParams,
    idempotencyKey: string,
    signal: AbortSignal | undefined,
  ): Promise<SendResult> {
    return db.transaction(async (tx): Promise<SendResult> => {
      const row = (
        await tx.query<{
          id: string;
          status: string;
          provider_message_id: string | null;
          recipient: string;
          subject: string;
          body: string;
        }>(
          `SELECT id, status, provider_message_id, recipient, subject, body FROM notifications
           WHERE ${where} FOR UPDATE`,
          params,
        )
      ).rows[0];
      if (!row) throw new Error('the outbox row is missing after its insert; retrying');
      if (row.status === 'sent') {
        return { outcome: 'already_sent', notificationId: row.id, messageId: row.provider_message_id };
      }
      const { messageId } = await notifier.send(
        { to: row.recipient, subject: row.subject, body: row.body, idempotencyKey },
        signal,
      );
      await tx.query(
        `UPDATE notifications SET status = 'sent', sent_at = now(), provider_message_id = :message_id
         WHERE id = CAST(:id AS uuid)`,
        { id: uuid(row.id), message_id: messageId },
      );
      return { outcome: 'sent', notificationId: row.id, messageId };
    });
  }

  async function facilityOf(facilityId: string) {
    const facility = (
      await db.query<FacilityRow>(
        `SELECT status, customer_email, drawn_principal_cents, accrued_interest_cents, collateral_to_loan_ratio,
                collateral_value_cents
         FROM credit_facilities WHERE id = CAST(:id AS uuid)`,
        { id: uuid(facilityId) },
      )
    ).rows[0];
    if (!facility) throw new PermanentJobError(`no credit facility ${facilityId}`);
    return facility;
  }

  async function sendReminder(n: ReminderPayload, signal?: AbortSignal): Promise<SendResult> {
    const facility = await facilityOf(n.facilityId);
    const params = { facility: uuid(n.facilityId), kind: n.kind, key_date: date(n.dueDate) };
    const where =
      'facility_id = CAST(:facility AS uuid) AND kind = :kind AND key_date = CAST(:key_date AS date) AND transition_id IS NULL';
    // A notice queued before the facility was closed is moot, unless it is already in the outbox (it was
    // due while the facility was open, and delivery below finishes it).
    if (facility.status === 'closed') {
      const recorded = await db.query(`SELECT 1 FROM notifications WHERE ${where}`, params);
      if (recorded.rowCount === 0) {
        return { outcome: 'skipped_facility_closed', notificationId: null, messageId: null };
      }
    }
    const rendered = renderNotification(n, facility);
    await db.query(
      `INSERT INTO notifications (facility_id, kind, key_date, recipient, subject, body)
       VALUES (CAST(:facility AS uuid), :kind, CAST(:key_date AS date), :recipient, :subject, :body)
       ON CONFLICT (facility_id, kind, key_date) WHERE transition_id IS NULL DO NOTHING`,
      { ...params, recipient: facility.customer_email, subject: rendered.subject, body: rendered.body },
    );
    return deliver(where, params, `${n.kind}:${n.facilityId}:${n.dueDate}`, signal);
  }

  async function sendTransitionNotice(n: TransitionPayload, signal?: AbortSignal): Promise<SendResult> {
    const facility = await facilityOf(n.facilityId);
    const transition = (
      await db.query<TransitionRow>(
        n.transitionId !== undefined
          ? `SELECT ${TRANSITION_COLUMNS} FROM collateral_transitions t
             WHERE t.id = CAST(:transition AS uuid) AND t.facility_id = CAST(:facility AS uuid)`
          : // Queued before transitions had ids: the facility's last transition of this kind that day.
            `SELECT ${TRANSITION_COLUMNS} FROM collateral_transitions t
             WHERE t.facility_id = CAST(:facility AS uuid) AND CAST(t.at AT TIME ZONE 'UTC' AS date) = CAST(:day AS date)
               AND ${NOTICE_KIND_SQL} = :kind
             ORDER BY t.at DESC LIMIT 1`,
        {
          transition: n.transitionId === undefined ? null : uuid(n.transitionId),
          facility: uuid(n.facilityId),
          day: date(n.valuationDate),
          kind: n.kind,
        },
      )
    ).rows[0];
    if (!transition) {
      throw new PermanentJobError(
        `no collateralization transition ${n.transitionId ?? `(${n.kind} on ${n.valuationDate})`} of facility ${n.facilityId}`,
      );
    }
    const params = { transition: uuid(transition.id) };
    const where = 'transition_id = CAST(:transition AS uuid)';
    if (facility.status === 'closed') {
      const recorded = await db.query(`SELECT 1 FROM notifications WHERE ${where}`, params);
      if (recorded.rowCount === 0) {
        return { outcome: 'skipped_facility_closed', notificationId: null, messageId: null };
      }
    }
    const rendered = renderTransitionNotice(n.kind, n.facilityId, transition);
    await db.query(
      `INSERT INTO notifications (facility_id, kind, key_date, transition_id, recipient, subject, body)
       VALUES (CAST(:facility AS uuid), :kind, CAST(:key_date AS date), CAST(:transition AS uuid), :recipient,
               :subject, :body)
       ON CONFLICT (transition_id) WHERE transition_id IS NOT NULL DO NOTHING`,
      {
        ...params,
        facility: uuid(n.facilityId),
        kind: n.kind,
        key_date: date(transition.at.toISOString().slice(0, 10)),
        recipient: facility.customer_email,
        subject: rendered.subject,
        body: rendered.body,
      },
    );
    return deliver(where, params, `${n.kind}:${transition.id}`, signal);
  }

  return {
    send: (n, signal) =>
      n.kind === 'payment-reminder' ? sendReminder(n, signal) : sendTransitionNotice(n, signal),
  };
}
