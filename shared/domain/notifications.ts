import { type Database, date, uuid } from '../db/port.js';
import type { NotificationPayload, NotificationService } from '../job-types/services.js';
import { PermanentJobError } from '../jobs/errors.js';
import { formatCents } from './money.js';
import type { Notifier } from './notifier.js';
import { renderObligationNotice } from './obligations.js';

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

/**
 * The collateral templates. Plain text: these go to borrowers' inboxes. Payment reminders and overdue
 * notices are rendered from the obligations (`renderObligationNotice`).
 */
export function renderNotification(n: CollateralNotice, f: FacilityRow): Rendered {
  const valued = [
    `On ${n.valuationDate} the collateral of your credit facility ${n.facilityId} was valued at`,
    `USD ${formatCents(f.collateral_value_cents ?? 0n)}, ${f.collateral_to_loan_ratio ?? 'n/a'} times the total outstanding`,
    `(principal USD ${formatCents(f.drawn_principal_cents)} plus interest USD ${formatCents(f.accrued_interest_cents)}).`,
  ];
  if (n.kind === 'liquidation-call') {
    return {
      subject: 'Liquidation warning: collateral at the liquidation level',
      body: [
        ...valued,
        'The collateral may be partly liquidated. Add collateral or repay part of the loan now.',
      ].join('\n'),
    };
  }
  if (n.kind === 'collateral-recovered') {
    return {
      subject: 'Collateral restored: margin call lifted',
      body: [...valued, 'Your facility is fully collateralized again. No action is needed.'].join('\n'),
    };
  }
  return {
    subject: 'Margin call: collateral below the required level',
    body: [...valued, 'Please add collateral or repay part of the loan to restore the required cover.'].join(
      '\n',
    ),
  };
}

type ObligationPayload = Extract<NotificationPayload, { dueDate: string }>;
type CollateralNotice = Exclude<NotificationPayload, ObligationPayload>;

function isObligationNotice(n: NotificationPayload): n is ObligationPayload {
  return n.kind === 'payment-reminder' || n.kind === 'obligation-overdue';
}

/** The day a notice is about: one notice per facility, kind and this day. */
function keyDateOf(n: NotificationPayload): string {
  return isObligationNotice(n) ? n.dueDate : n.valuationDate;
}

export type SendResult =
  | { outcome: 'sent' | 'already_sent'; notificationId: string; messageId: string | null }
  /**
   * The facility was closed before the notice went out, or nothing due on the reminded date is unpaid any
   * more: nothing recorded, nothing sent.
   */
  | { outcome: 'skipped_facility_closed' | 'skipped_settled'; notificationId: null; messageId: null };

/** The notification service with its result typed (an extension, so callers passing a signal see it too). */
export interface LendingNotificationService extends NotificationService {
  send(n: NotificationPayload, signal?: AbortSignal): Promise<SendResult>;
}

/**
 * Records the notification in the outbox (unique per facility, kind and day) and then delivers what is
 * not yet sent. A retried or duplicated job finds the row already `sent` and sends nothing. The one gap
 * no outbox closes: a crash after the provider accepted the message and before the row is marked sent
 * re-sends it once on retry (the outbox key travels with the message so it can be spotted).
 */
export function createNotificationService(db: Database, notifier: Notifier): LendingNotificationService {
  return {
    async send(n, signal) {
      const facility = (
        await db.query<FacilityRow>(
          `SELECT status, customer_email, drawn_principal_cents, accrued_interest_cents, collateral_to_loan_ratio,
                  collateral_value_cents
           FROM credit_facilities WHERE id = CAST(:id AS uuid)`,
          { id: uuid(n.facilityId) },
        )
      ).rows[0];
      if (!facility) throw new PermanentJobError(`no credit facility ${n.facilityId}`);
      const keyDate = keyDateOf(n);
      const params = { facility: uuid(n.facilityId), kind: n.kind, key_date: date(keyDate) };
      // A notice queued before the facility was closed, or a reminder of what has been paid since, is
      // moot, unless it is already in the outbox (it was due when recorded, and delivery below finishes it).
      const rendered = isObligationNotice(n)
        ? await renderObligationNotice(db, n)
        : renderNotification(n, facility);
      if (facility.status === 'closed' || rendered === null) {
        const recorded = await db.query(
          `SELECT 1 FROM notifications
           WHERE facility_id = CAST(:facility AS uuid) AND kind = :kind AND key_date = CAST(:key_date AS date)`,
          params,
        );
        if (recorded.rowCount === 0) {
          const outcome = facility.status === 'closed' ? 'skipped_facility_closed' : 'skipped_settled';
          return { outcome, notificationId: null, messageId: null };
        }
      }
      if (rendered) {
        await db.query(
          `INSERT INTO notifications (facility_id, kind, key_date, recipient, subject, body)
           VALUES (CAST(:facility AS uuid), :kind, CAST(:key_date AS date), :recipient, :subject, :body)
           ON CONFLICT (facility_id, kind, key_date) DO NOTHING`,
          { ...params, recipient: facility.customer_email, subject: rendered.subject, body: rendered.body },
        );
      }
      // Deliver under the outbox row's lock: a concurrent duplicate waits, then finds it sent.
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
             WHERE facility_id = CAST(:facility AS uuid) AND kind = :kind AND key_date = CAST(:key_date AS date)
             FOR UPDATE`,
            params,
          )
        ).rows[0];
        if (!row) throw new Error('the outbox row is missing after its insert; retrying');
        if (row.status === 'sent') {
          return { outcome: 'already_sent', notificationId: row.id, messageId: row.provider_message_id };
        }
        const { messageId } = await notifier.send(
          {
            to: row.recipient,
            subject: row.subject,
            body: row.body,
            idempotencyKey: `${n.kind}:${n.facilityId}:${keyDate}`,
          },
          signal,
        );
        await tx.query(
          `UPDATE notifications SET status = 'sent', sent_at = now(), provider_message_id = :message_id
           WHERE id = CAST(:id AS uuid)`,
          { id: uuid(row.id), message_id: messageId },
        );
        return { outcome: 'sent', notificationId: row.id, messageId };
      });
    },
  };
}
