import type { LendingRegistry } from './index.js';

/**
 * What a job type's executor needs from its environment on AWS, beyond what every function gets (the
 * Data API on the cluster, logs, traces). The stack grants from this declaration and never from a
 * type's name:
 * - `email-sender`: sends e-mail through SES as the configured sender.
 * - `valuation-settings`: values collateral, so it gets the stack's valuation settings (more price
 *   sources, the price jump guard, the quote age limit, the upgrade buffer); other executors keep the
 *   code's defaults, which they never use.
 * Every executor may publish to the jobs bus (to wake fetch-ready after follow-ups, or when its invocation
 * runs out of time with work left): that is the job system's own need, not a type's.
 * A type that needs nothing declares `[]`; the record is keyed by the registered types, so a new type
 * does not type-check until it says what it needs.
 */
export type ExecutorNeed = 'email-sender' | 'valuation-settings';

export const EXECUTOR_NEEDS: Record<keyof LendingRegistry['schemas'], readonly ExecutorNeed[]> = {
  'approval-processing': [],
  'interest-accrual': [],
  notification: ['email-sender'],
  sync: ['valuation-settings'],
  'payment-reminders': [],
  maintenance: [],
};

/** The needs of `type` (none for a type this list does not know, such as a test's own types). */
export function executorNeeds(type: string): readonly ExecutorNeed[] {
  return (EXECUTOR_NEEDS as Record<string, readonly ExecutorNeed[]>)[type] ?? [];
}
