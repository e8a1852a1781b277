import { type Database, date, uuid } from '../db/port.js';
import type { ReminderService } from '../job-types/services.js';
import type { JobTracker } from '../jobs/tracker.js';
import { ENQUEUE_PAGE_SIZE, FIRST_PAGE_AFTER_ID } from './bulk.js';
import { addDays } from './money.js';

/** Reminders go out this many days before a payment is due. */
export const REMINDER_DAYS_AHEAD = 3;

/**
 * The daily reminder sweep: one `notification` job per active facility whose payment falls due
 * REMINDER_DAYS_AHEAD days after `day`, each keyed by facility and due date, so running the sweep twice
 * enqueues nothing new (and the outbox would not send twice anyway). Paged, so a crash part-way through is
 * finished by the retry.
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
        const page = await deps.db.query<{ id: string }>(
          `SELECT id FROM credit_facilities
           WHERE status = 'active' AND next_payment_due = CAST(:due AS date) AND drawn_principal_cents > 0
             AND id > CAST(:after AS uuid)
           ORDER BY id LIMIT ${ENQUEUE_PAGE_SIZE}`,
          { due: date(dueDate), after: uuid(after) },
        );
        if (page.rows.length === 0) break;
        const results = await deps.jobs.enqueueUntyped(
          page.rows.map((f) => ({
            type: 'notification',
            payload: { kind: 'payment-reminder', facilityId: f.id, dueDate },
            idempotencyKey: `payment-reminder:${f.id}:${dueDate}`,
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
