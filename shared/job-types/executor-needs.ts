import type { LendingRegistry } from './index.js';
import type { JobServices } from './services.js';

/**
 * What a job type's executor needs from its environment on AWS, beyond what every function gets (the
 * Data API on the cluster, logs, traces). The stack grants from this declaration and never from a
 * type's name, and passes each executor only the settings its needs name:
 * - `email-sender`: sends e-mail through SES as the configured sender (LANA_NOTIFICATION_FROM_ADDRESS).
 * - `valuation-settings`: values collateral, so it gets the price sources and the stack's valuation
 *   settings (the price jump guard, the quote age limit, the upgrade buffer).
 * - `job-retention`: prunes finished jobs, so it gets the retention period.
 * Every executor may publish to the jobs bus (to wake fetch-ready after follow-ups, or when its invocation
 * runs out of time with work left): that is the job system's own need, not a type's.
 * A type that needs nothing declares `[]`; the record is keyed by the registered types, so a new type
 * does not type-check until it says what it needs.
 */
export type ExecutorNeed = 'email-sender' | 'valuation-settings' | 'job-retention';

type LendingType = keyof LendingRegistry['schemas'];

export const EXECUTOR_NEEDS: Record<LendingType, readonly ExecutorNeed[]> = {
  'approval-processing': [],
  'interest-accrual': [],
  notification: ['email-sender'],
  sync: ['valuation-settings'],
  'payment-reminders': [],
  maintenance: ['job-retention'],
};

/** The needs of `type` (none for a type this list does not know, such as a test's own types). */
export function executorNeeds(type: string): readonly ExecutorNeed[] {
  return (EXECUTOR_NEEDS as Record<string, readonly ExecutorNeed[]>)[type] ?? [];
}

/**
 * The job service each type's executor calls: an executor on AWS builds that one alone, so it needs only
 * that service's settings (above).
 */
export const EXECUTOR_SERVICE: Record<LendingType, keyof JobServices> = {
  'approval-processing': 'approvals',
  'interest-accrual': 'credit',
  notification: 'notifications',
  sync: 'portfolio',
  'payment-reminders': 'reminders',
  maintenance: 'maintenance',
};

/** The service `type`'s executor calls, or undefined for a type this list does not know. */
export function executorService(type: string): keyof JobServices | undefined {
  return (EXECUTOR_SERVICE as Record<string, keyof JobServices>)[type];
}
