import { type Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import type { AttemptOutcome, JobMetrics } from '../jobs/metrics.js';

/** Metric names, shared with the CloudWatch alarms and dashboard in `infra/monitoring.ts`. */
export const METRIC = {
  enqueued: 'JobsEnqueued',
  succeeded: 'JobSucceeded',
  failed: 'JobFailed',
  retried: 'JobRetried',
  leaseExpired: 'LeaseExpired',
  executionTime: 'ExecutionTime',
  queueDepth: 'QueueDepth',
  oldestReadyAge: 'OldestReadyAgeSeconds',
  /** Jobs created in the last minute by any path, read from the table on every fetch-ready run. */
  enqueuedLastMinute: 'JobsEnqueuedLastMinute',
  /** Attempts still running past their type's timeout (the long-running-jobs signal). */
  runningPastTimeout: 'JobsRunningPastTimeout',
  /** Claims no executor began within their dispatch lease, handed back by fetch-ready's rescue. */
  handedBack: 'ClaimsHandedBack',
} as const;

/**
 * The metrics port as CloudWatch embedded metrics (Powertools; flushed by the `logMetrics` middleware).
 * Every metric carries only the `service` dimension Powertools adds, so the alarms can match it exactly;
 * the job type goes into the log record as metadata.
 */
export function createPowertoolsJobMetrics(metrics: Metrics): JobMetrics {
  const outcomeMetric: Record<AttemptOutcome, string> = {
    completed: METRIC.succeeded,
    retrying: METRIC.retried,
    failed: METRIC.failed,
    lease_expired: METRIC.leaseExpired,
  };
  return {
    jobsEnqueued(jobType, count) {
      metrics.addMetadata('jobType', jobType);
      metrics.addMetric(METRIC.enqueued, MetricUnit.Count, count);
    },
    attemptFinished(jobType, outcome, durationMs) {
      metrics.addMetadata('jobType', jobType);
      metrics.addMetric(outcomeMetric[outcome], MetricUnit.Count, 1);
      // A retry is also a failed attempt: the failure rate counts both.
      if (outcome === 'retrying' || outcome === 'lease_expired')
        metrics.addMetric(METRIC.failed, MetricUnit.Count, 1);
      if (durationMs !== null) metrics.addMetric(METRIC.executionTime, MetricUnit.Milliseconds, durationMs);
    },
    queueState({ depth, oldestReadyAgeSeconds }) {
      metrics.addMetric(METRIC.queueDepth, MetricUnit.Count, depth);
      metrics.addMetric(METRIC.oldestReadyAge, MetricUnit.Seconds, oldestReadyAgeSeconds);
    },
    claimsHandedBack(jobType, count) {
      metrics.addMetadata('handedBackJobType', jobType);
      metrics.addMetric(METRIC.handedBack, MetricUnit.Count, count);
    },
    queueActivity({ enqueuedLastMinute, runningPastTimeout }) {
      metrics.addMetric(METRIC.enqueuedLastMinute, MetricUnit.Count, enqueuedLastMinute);
      metrics.addMetric(METRIC.runningPastTimeout, MetricUnit.Count, runningPastTimeout);
    },
  };
}
