import { type Database, date, uuid } from '../db/port.js';
import type { ReminderService } from '../job-types/services.js';
import type { JobTracker } from '../jobs/tracker.js';
import { ENQUEUE_PAGE_SIZE, FIRST_PAGE_AFTER_ID } from './bulk.js';
import { addDays } from './money.js';
import { futureSweepError, postPrincipalObligations } from './obligations.js';

/** Reminders go out this many days before an obligation is due. */
export const REMINDER_DAYS_AHEAD = 3;

export interface ReminderSweepResult {
  /** The last due date this sweep reminds of. */
  dueDate: string;
  /** Payment reminders enqueued (one per facility and due date). */
  enqueued: number;
  /** Overdue notices enqueued (one per facility and due date gone overdue). */
  overdueEnqueued: number;
  /** Principal obligations created for facilities maturing within the reminder window. */
  principalObligations: number;
}

/**
 * The daily sweep over obligations, for the day `day` (UTC, not after today by the database clock):
 * 1. the principal of facilities maturing within the window becomes an obligation due at maturity;
 * 2. one `payment-reminder` notification per active facility and due date with an unpaid obligation due
 *    from `day` to REMINDER_DAYS_AHEAD days after it and no reminder for that date in the outbox yet, so
 *    a missed or late sweep still reminds;
 * 3. one `obligation-overdue` notification per facility and due date whose unpaid obligation is overdue
 *    on `day` and has not had its notice yet.
 * Each job is keyed by facility and due date, so running the sweep twice enqueues nothing new (and the
 * outbox would not send twice anyway). Paged, so a crash part-way through is finished by the retry.
 */
export interface LendingReminderService extends ReminderService {
  enqueueDueReminders(day: string, signal?: AbortSignal): Promise<ReminderSweepResult>;
}

/** Unpaid obligations of active facilities, one row per facility and due date, that still need `:kind`. */
function dueDatesSql(window: string): string {
  return `
SELECT o.facility_id AS id, CAST(o.due_date AS text) AS due
FROM obligations o JOIN credit_facilities f ON f.id = o.facility_id
WHERE o.settled_at IS NULL AND ${window} AND f.status = 'active'
  AND NOT EXISTS (SELECT 1 FROM notifications n
                  WHERE n.facility_id = o.facility_id AND n.kind = :kind AND n.key_date = o.due_date)
  AND (o.facility_id, o.due_date) > (CAST(:after AS uuid), CAST(:after_due AS date))
GROUP BY o.facility_id, o.due_date
ORDER BY o.facility_id, o.due_date LIMIT ${ENQUEUE_PAGE_SIZE}`;
}

const REMINDERS_SQL = dueDatesSql('o.due_date BETWEEN CAST(:day AS date) AND CAST(:due AS date)');
const OVERDUE_SQL = dueDatesSql('o.overdue_date <= CAST(:day AS date)');

export function createReminderService(deps: {
  db: Database;
  jobs: Pick<JobTracker, 'enqueueUntyped'>;
}): LendingReminderService {
  async function enqueueFor(
    kind: 'payment-reminder' | 'obligation-overdue',
    sql: string,
    params: { day: string; due: string },
  ): Promise<number> {
    let enqueued = 0;
    let after = { id: FIRST_PAGE_AFTER_ID, due: '0001-01-01' };
    for (;;) {
      const page = await deps.db.query<{ id: string; due: string }>(sql, {
        kind,
        day: date(params.day),
        due: date(params.due),
        after: uuid(after.id),
        after_due: date(after.due),
      });
      if (page.rows.length === 0) break;
      const results = await deps.jobs.enqueueUntyped(
        page.rows.map((r) => ({
          type: 'notification',
          payload: { kind, facilityId: r.id, dueDate: r.due },
          idempotencyKey: `${kind}:${r.id}:${r.due}`,
        })),
      );
      enqueued += results.filter((r) => r.created).length;
      after = page.rows[page.rows.length - 1]!;
      if (page.rows.length < ENQUEUE_PAGE_SIZE) break;
    }
    return enqueued;
  }

  return {
    async enqueueDueReminders(day) {
      const begun = (
        await deps.db.query<{ begun: boolean }>(
          `SELECT CAST(:day AS date) <= CAST(now() AT TIME ZONE 'UTC' AS date) AS begun`,
          { day: date(day) },
        )
      ).rows[0]!.begun;
      if (!begun) throw futureSweepError(day);
      const dueDate = addDays(day, REMINDER_DAYS_AHEAD);
      const principalObligations = await postPrincipalObligations(deps.db, day);
      const enqueued = await enqueueFor('payment-reminder', REMINDERS_SQL, { day, due: dueDate });
      const overdueEnqueued = await enqueueFor('obligation-overdue', OVERDUE_SQL, { day, due: dueDate });
      return { dueDate, enqueued, overdueEnqueued, principalObligations };
    },
  };
}
