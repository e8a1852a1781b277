import type { JobStatus } from './model.js';

/**
 * How an attempt can end, as `job_executions.outcome` records it (the CHECK on
 * `job_execution_records.outcome` lists exactly these: test/db/check-constraints.test.ts).
 */
export const EXECUTION_OUTCOMES = [
  'completed',
  'failed',
  'retry_requested',
  'interrupted',
  'lease_expired',
  'released',
  'cancelled',
  'undelivered',
] as const;
export type ExecutionOutcome = (typeof EXECUTION_OUTCOMES)[number];

export interface AttemptOutcomeRow {
  /** Whether the attempt counts toward `max_attempts` and the backoff (it did when an executor began it). */
  counted: boolean;
  /** Whether the failure rate counts it as a failure (`lana-jobs stats`, the console, CloudWatch). */
  failure: boolean;
  /** The job's status once the attempt is closed. */
  jobAfter: readonly JobStatus[];
}

/**
 * What happened to an attempt: the one table the other views of an attempt's end derive from (and the
 * one docs/flow-control.md shows under "What counts as an attempt"; test/jobs/outcomes.test.ts holds the
 * two and the tracker's behaviour to it).
 *
 * | outcome           | what happened                                                        | counted | failure | the job after               |
 * |-------------------|----------------------------------------------------------------------|---------|---------|-----------------------------|
 * | `completed`       | the executor began the attempt and reported success                  | yes     | no      | `completed`                 |
 * | `failed`          | it began and failed (threw, timed out, or failed permanently)        | yes     | yes     | `retrying` or `failed`      |
 * | `lease_expired`   | it began, then vanished (crash, Lambda timeout): its lease expired   | yes     | yes     | `retrying` or `failed`      |
 * | `released`        | the claim was handed back unstarted (its event could not be published, a worker stopped with it queued) | no | no | `pending` or `retrying`, due at once |
 * | `undelivered`     | no executor began it before its dispatch lease expired               | no      | no      | `pending` or `retrying`, due at once |
 * | `retry_requested` | the executor asked to run again later (`RetryJobLater`)              | no      | no      | `retrying`, due when asked  |
 * | `interrupted`     | a local worker's shutdown cut the run short                          | no      | no      | `retrying`, due at once     |
 * | `cancelled`       | an operator cancelled the job while the attempt ran                  | no      | no      | `cancelled`                 |
 *
 * The attempt number is handed out by every claim, counted or not, and never reused: it is the fencing
 * token. Views derived from this table:
 * - `JobResult` (dispatcher.ts): what a run produced, before it is recorded: `completed`, `failed`
 *   (`permanent` or not) or `retry_later` (recorded as `retry_requested`).
 * - `RecordedStatus`: what the job table says after an executor's report: the job's status, or
 *   `fenced_out` when the attempt was no longer current and nothing changed. `RecordedAttempt`
 *   (record-result.ts), the worker's `AttemptEvent` and `ExecutorOutcome` (with `duplicate`, a delivery
 *   whose attempt had begun) say the same; `FailResult` (attempts.ts) is its failed half.
 * - `AttemptOutcome` (metrics.ts): a finished attempt as the metrics count it.
 * - `isFailureOutcome`: the failure rate of `lana-jobs stats` and the console.
 */
export const ATTEMPT_OUTCOMES: Readonly<Record<ExecutionOutcome, AttemptOutcomeRow>> = {
  completed: { counted: true, failure: false, jobAfter: ['completed'] },
  failed: { counted: true, failure: true, jobAfter: ['retrying', 'failed'] },
  lease_expired: { counted: true, failure: true, jobAfter: ['retrying', 'failed'] },
  released: { counted: false, failure: false, jobAfter: ['pending', 'retrying'] },
  undelivered: { counted: false, failure: false, jobAfter: ['pending', 'retrying'] },
  retry_requested: { counted: false, failure: false, jobAfter: ['retrying'] },
  interrupted: { counted: false, failure: false, jobAfter: ['retrying'] },
  cancelled: { counted: false, failure: false, jobAfter: ['cancelled'] },
};

/** Whether a recorded outcome (a `job_executions.outcome` value) counts as a failure in the failure rate. */
export function isFailureOutcome(outcome: string): boolean {
  return (
    (ATTEMPT_OUTCOMES as Readonly<Record<string, AttemptOutcomeRow | undefined>>)[outcome]?.failure ?? false
  );
}

/** The statuses an executor's report leaves a job in: completed, or failed and retried or failed for good. */
export type ReportedJobStatus = Extract<JobStatus, 'completed' | 'retrying' | 'failed'>;

/** What the job table says after an executor's report (see the table above). */
export type RecordedStatus = ReportedJobStatus | 'fenced_out';
