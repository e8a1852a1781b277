/**
 * What the job types' executors need. The job types only know these interfaces; the lending domain
 * (`shared/domain/`) and the job core's maintenance implement them, and each adapter (local runtime,
 * Lambda) builds them once and hands them to the dispatcher.
 */
import type { NotificationPayload } from './payloads.js';

export type { NotificationPayload } from './payloads.js';

export interface ApprovalService {
  /** Concludes an approval process whose votes are in and, when approved, executes its disbursal. Idempotent. */
  processApproval(processId: string, signal: AbortSignal, facilityId?: string): Promise<unknown>;
  /** Expires every open process past its policy's time and releases its reservation. Idempotent. */
  expireOverdueProcesses(signal: AbortSignal): Promise<unknown>;
}

export interface CreditService {
  /**
   * Accrues every ended, not yet accrued day of every facility up to `upTo` (YYYY-MM-DD, UTC; default and cap:
   * yesterday by the database clock). Idempotent per facility-day; a later run heals any gap.
   */
  accrueDailyInterest(upTo: string | undefined, signal: AbortSignal): Promise<unknown>;
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
  /** Revalues collateral at a price an operator accepted by hand. Idempotent. */
  applyManualPrice(manualPriceId: string, signal: AbortSignal): Promise<unknown>;
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
