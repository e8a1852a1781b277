/**
 * What the seed's executors need from the lending domain. The job types only know these interfaces; the
 * domain (`shared/domain/`) implements them on real tables, and each adapter (local runtime, Lambda)
 * builds them once and hands them to the dispatcher.
 */
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

export interface PortfolioService {
  /** Revalues collateral from the price source and flags facilities below the margin-call threshold. */
  revalue(signal: AbortSignal): Promise<unknown>;
}

export interface JobServices {
  approvals: ApprovalService;
  credit: CreditService;
  notifications: NotificationService;
  portfolio: PortfolioService;
}

export type { NotificationPayload } from './payloads.js';

import type { NotificationPayload } from './payloads.js';
