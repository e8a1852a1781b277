import type { ExecutionOutcome, ReportedJobStatus } from './outcomes.js';

/**
 * A finished attempt as the metrics count it, derived from the attempt outcomes (`ATTEMPT_OUTCOMES`):
 * completed, failed and due again (`retrying`) or for good (`failed`), or lost by its executor
 * (`lease_expired`). A requested retry and an interrupted run are reported as `retrying`; released,
 * undelivered and cancelled attempts are not reported.
 */
export type AttemptOutcome =
  | Extract<ExecutionOutcome, 'completed' | 'lease_expired'>
  | Exclude<ReportedJobStatus, 'completed'>;

/**
 * The metrics port: jobs enqueued, execution time, success and failure rates, queue depth,
 * plus retries and the age of the oldest ready job. The tracker reports what it does; adapters decide where
 * the figures go: CloudWatch embedded metrics on Lambda, an in-memory tally locally (the durable figures
 * behind `lana-jobs stats` come from the tables themselves).
 */
export interface JobMetrics {
  jobsEnqueued(jobType: string, count: number): void;
  /** One finished attempt. `retrying` = it failed and will run again; `failed` = it failed for good. */
  attemptFinished(jobType: string, outcome: AttemptOutcome, durationMs: number | null): void;
  queueState(state: { depth: number; oldestReadyAgeSeconds: number }): void;
  /**
   * Claims of a type that no executor began within their dispatch lease, handed back by the rescuer: a
   * type whose events do not arrive (a broken deploy, a missing permission, sustained throttling).
   */
  claimsHandedBack?(jobType: string, count: number): void;
  /** Once a minute: jobs created in the last minute by any path, attempts running past their timeout. */
  queueActivity?(activity: { enqueuedLastMinute: number; runningPastTimeout: number }): void;
}

export const noMetrics: JobMetrics = {
  jobsEnqueued() {},
  attemptFinished() {},
  queueState() {},
};

export interface MetricsSnapshot {
  enqueued: Record<string, number>;
  outcomes: Record<string, Record<AttemptOutcome, number>>;
  executionMs: { count: number; total: number; max: number };
  queue: { depth: number; oldestReadyAgeSeconds: number } | null;
}

/** Counts in memory; the local worker logs it and tests read it. */
export class InMemoryMetrics implements JobMetrics {
  private snapshotValue: MetricsSnapshot = {
    enqueued: {},
    outcomes: {},
    executionMs: { count: 0, total: 0, max: 0 },
    queue: null,
  };

  jobsEnqueued(jobType: string, count: number): void {
    this.snapshotValue.enqueued[jobType] = (this.snapshotValue.enqueued[jobType] ?? 0) + count;
  }

  attemptFinished(jobType: string, outcome: AttemptOutcome, durationMs: number | null): void {
    let perType = this.snapshotValue.outcomes[jobType];
    if (!perType) {
      perType = { completed: 0, retrying: 0, failed: 0, lease_expired: 0 };
      this.snapshotValue.outcomes[jobType] = perType;
    }
    perType[outcome]++;
    if (durationMs !== null) {
      const e = this.snapshotValue.executionMs;
      e.count++;
      e.total += durationMs;
      e.max = Math.max(e.max, durationMs);
    }
  }

  queueState(state: { depth: number; oldestReadyAgeSeconds: number }): void {
    this.snapshotValue.queue = { ...state };
  }

  snapshot(): MetricsSnapshot {
    return structuredClone(this.snapshotValue);
  }
}
