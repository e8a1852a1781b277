import type { SeedRegistry } from './index.js';

/**
 * What a job type's executor needs from its environment on AWS, beyond what every function gets (the
 * Data API on the cluster, logs, traces). The stack grants from this declaration and never from a
 * type's name:
 * - `email-sender`: sends e-mail through SES as the configured sender;
 * - `jobs-bus`: publishes to the jobs bus (an executor whose jobs enqueue follow-ups wakes fetch-ready).
 * A type that needs nothing declares `[]`; the record is keyed by the registered types, so a new type
 * does not type-check until it says what it needs.
 */
export type ExecutorNeed = 'email-sender' | 'jobs-bus';

export const EXECUTOR_NEEDS: Record<keyof SeedRegistry['schemas'], readonly ExecutorNeed[]> = {
  'approval-processing': [],
  'interest-accrual': [],
  notification: ['email-sender'],
  // Margin calls and payment reminders are follow-up notification jobs.
  sync: ['jobs-bus'],
  'payment-reminders': ['jobs-bus'],
  maintenance: [],
};

/** The needs of `type` (none for a type this list does not know, such as a test's own types). */
export function executorNeeds(type: string): readonly ExecutorNeed[] {
  return (EXECUTOR_NEEDS as Record<string, readonly ExecutorNeed[]>)[type] ?? [];
}
