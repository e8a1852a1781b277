import { type Database, date, uuid } from '../db/port.js';
import type { ReminderService } from '../job-types/services.js';
import type { JobTracker } from '../jobs/tracker.js';
import { ENQUEUE_PAGE_SIZE, FIRST_PAGE_AFTER_ID } from './bulk.js';
import { addDays } from './money.js';

/** Reminders go out this many days before a payment is due. */
export const REMINDER_DAYS_AHEAD = 3;

/**
 * The daily reminder sweep: one `notification` job per active facility whose payment falls due within
 * REMINDER_DAYS_AHEAD days of `day` (from `day` itself on) and that has no reminder for that due date in
 * the outbox yet, so a missed or late sweep still reminds (a due date is never skipped for good). Each job
 * is keyed by facility and due date, so running the sweep twice enqueues nothing new (and the outbox would
 * not send twice anyway). Paged, so a crash part-way through is finished by the retry.
 */
export interface LendingReminderService extends ReminderService {
  enqueueDueReminders(day: string, signal?: AbortSignal): Promise<{ dueDate: string; enqueued: number }>;
}

export function createReminderService(deps: {
  db: Database;
  jobs: Pick<JobTracker, 'enqueueUntyped'>;
}): LendingReminderService {
  return {
    async enqueueDueReminders(day) {
      const dueDate = addDays(day, REMINDER_DAYS_AHEAD);
      let enqueued = 0;
      let after = FIRST_PAGE_AFTER_ID;
      for (;;) {
        const page = await deps.db.query<{ id: string; due: string }>(
          `SELECT f.id, CAST(f.next_payment_due AS text) AS due FROM credit_facilities f
           WHERE f.status = 'active' AND f.drawn_principal_cents > 0
             AND f.next_payment_due BETWEEN CAST(:day AS date) AND CAST(:due AS date)
             AND NOT EXISTS (SELECT 1 FROM notifications n
                             WHERE n.facility_id = f.id AND n.kind = 'payment-reminder'
                               AND n.key_date = f.next_payment_due)
             AND f.id > CAST(:after AS uuid)
           ORDER BY f.id LIMIT ${ENQUEUE_PAGE_SIZE}`,
          { day: date(day), due: date(dueDate), after: uuid(after) },
        );
        if (page.rows.length === 0) break;
        const results = await deps.jobs.enqueueUntyped(
          page.rows.map((f) => ({
            type: 'notification',
            payload: { kind: 'payment-reminder', facilityId: f.id, dueDate: f.due },
            idempotencyKey: `payment-reminder:${f.id}:${f.due}`,
          })),
        );
        enqueued += results.filter((r) => r.created).length;
        after = page.rows[page.rows.length - 1]!.id;
        if (page.rows.length < ENQUEUE_PAGE_SIZE) break;
      }
      return { dueDate, enqueued };
    },
  };
}
