/**
 * What the job types' executors need. The job types only know these interfaces; the lending domain
 * (`shared/domain/`) and the job core's maintenance implement them, and each adapter (local runtime,
 * Lambda) builds them once and hands them to the dispatcher.
 */
import type { NotificationPayload } from './payloads.js';

export type { NotificationPayload } from './payloads.js';

export interface ApprovalService {
  /** Concludes an approval process whose votes are in and, when approved, executes its disbursal. Idempotent. */
  processApproval(processId: string, signal: AbortSignal): Promise<unknown>;
}

export interface CreditService {
  /** Accrues one day of interest on every active facility for `date` (YYYY-MM-DD, UTC). Idempotent per day. */
  accrueDailyInterest(date: string, signal: AbortSignal): Promise<unknown>;
}

export interface NotificationService {
  /** Renders, records in the outbox and delivers one notification; a retry never re-sends a delivered one. */
  send(notification: NotificationPayload, signal: AbortSignal): Promise<unknown>;
}

export interface ReminderService {
  /** Enqueues the payment reminders due from the sweep run on `date`. Idempotent. */
  enqueueDueReminders(date: string, signal: AbortSignal): Promise<unknown>;
}

export interface PortfolioService {
  /** Revalues collateral from the price source and flags facilities below the margin-call threshold. */
  revalue(signal: AbortSignal): Promise<unknown>;
}

export interface MaintenanceService {
  /** Deletes finished jobs past the retention period, in bounded batches. */
  pruneFinishedJobs(signal: AbortSignal): Promise<unknown>;
}

export interface JobServices {
  approvals: ApprovalService;
  credit: CreditService;
  notifications: NotificationService;
  reminders: ReminderService;
  portfolio: PortfolioService;
  maintenance: MaintenanceService;
}
