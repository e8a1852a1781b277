import { type Database, date } from '../db/port.js';
import type { JobTracker } from '../jobs/tracker.js';
import { addDays } from './money.js';

/** Reminders go out this many days before a payment is due. */
export const REMINDER_DAYS_AHEAD = 3;

/**
 * The daily reminder sweep: one `notification` job per active facility whose payment falls due
 * REMINDER_DAYS_AHEAD days after `day`, each keyed by facility and due date, so running the sweep twice
 * enqueues nothing new (and the outbox would not send twice anyway).
 */
export function createReminderService(deps: { db: Database; jobs: Pick<JobTracker, 'enqueueUntyped'> }) {
  return {
    async enqueueDueReminders(day: string): Promise<{ dueDate: string; enqueued: number }> {
      const dueDate = addDays(day, REMINDER_DAYS_AHEAD);
      const due = await deps.db.query<{ id: string }>(
        `SELECT id FROM credit_facilities
         WHERE status = 'active' AND next_payment_due = CAST(:due AS date) AND drawn_principal_cents > 0`,
        { due: date(dueDate) },
      );
      let enqueued = 0;
      for (let i = 0; i < due.rows.length; i += 5000) {
        const results = await deps.jobs.enqueueUntyped(
          due.rows.slice(i, i + 5000).map((f) => ({
            type: 'notification',
            payload: { kind: 'payment-reminder', facilityId: f.id, dueDate },
            idempotencyKey: `payment-reminder:${f.id}:${dueDate}`,
          })),
        );
        enqueued += results.filter((r) => r.created).length;
      }
      return { dueDate, enqueued };
    },
  };
}
