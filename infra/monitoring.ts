import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { METRIC } from '../shared/aws/powertools-metrics.js';

export interface AlarmThresholds {
  /** Percent of finished attempts that failed (retried, failed for good, or lease expired). */
  failureRatePercent: number;
  /** The failure rate is only judged over at least this many attempts in a period. */
  failureRateMinAttempts: number;
  /** Due jobs waiting. */
  queueDepth: number;
  /** Seconds the oldest due job has waited. */
  oldestReadyAgeSeconds: number;
}

export const DEFAULT_THRESHOLDS: AlarmThresholds = {
  failureRatePercent: 10,
  failureRateMinAttempts: 5,
  queueDepth: 1000,
  oldestReadyAgeSeconds: 600,
};

export interface JobMonitoringProps {
  namespace: string;
  serviceName: string;
  thresholds: AlarmThresholds;
  alarmEmail?: string;
  fetchReady: lambda.IFunction;
  executors: ReadonlyMap<string, lambda.IFunction>;
  deadLetterQueues: Record<string, sqs.IQueue>;
}

/**
 * Alarms on the seed's signals (failure rate, long-running jobs, queue backup) and on anything landing in
 * a dead-letter queue, all notifying one SNS topic; and a dashboard of the seed's metrics.
 */
export class JobMonitoring extends Construct {
  readonly topic: sns.Topic;
  readonly alarms: Record<string, cloudwatch.Alarm> = {};
  readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: JobMonitoringProps) {
    super(scope, id);
    const t = props.thresholds;
    this.topic = new sns.Topic(this, 'AlarmTopic', { displayName: 'lana-jobs alarms', enforceSSL: true });
    if (props.alarmEmail) this.topic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));

    // EMF metrics match only with their exact dimension set: Powertools adds `service`, nothing else.
    const jobMetric = (metricName: string, statistic: string, period = Duration.minutes(5)) =>
      new cloudwatch.Metric({
        namespace: props.namespace,
        metricName,
        dimensionsMap: { service: props.serviceName },
        statistic,
        period,
      });
    const succeeded = jobMetric(METRIC.succeeded, cloudwatch.Stats.SUM);
    const failed = jobMetric(METRIC.failed, cloudwatch.Stats.SUM);
    const failureRate = new cloudwatch.MathExpression({
      // No traffic (or too little to judge) reads as 0 %, not as missing data or a division by zero.
      expression: `IF((s + f) >= ${t.failureRateMinAttempts}, 100 * f / (s + f), 0)`,
      usingMetrics: { s: succeeded, f: failed },
      period: Duration.minutes(5),
      label: 'Failed attempts (%)',
    });

    const alarm = (
      alarmId: string,
      metric: cloudwatch.Metric | cloudwatch.MathExpression,
      options: Omit<cloudwatch.CreateAlarmOptions, 'alarmDescription'> & { description: string },
    ) => {
      const { description, ...rest } = options;
      const a = metric.createAlarm(this, alarmId, {
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        ...rest,
        alarmDescription: description,
      });
      a.addAlarmAction(new actions.SnsAction(this.topic));
      a.addOkAction(new actions.SnsAction(this.topic));
      this.alarms[alarmId] = a;
      return a;
    };

    alarm('FailureRate', failureRate, {
      description: `More than ${t.failureRatePercent} % of job attempts failed (of at least ${t.failureRateMinAttempts}) in 2 of 3 five-minute periods`,
      threshold: t.failureRatePercent,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 3,
      datapointsToAlarm: 2,
    });
    alarm('LongRunningJobs', jobMetric(METRIC.leaseExpired, cloudwatch.Stats.SUM), {
      description:
        'A running job outlived its lease (timeout + grace): its executor hung, crashed or never got the event. fetch-ready rescued it under the retry rule.',
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
    });
    alarm('QueueDepth', jobMetric(METRIC.queueDepth, cloudwatch.Stats.MAXIMUM), {
      description: `More than ${t.queueDepth} due jobs waiting for 15 minutes`,
      threshold: t.queueDepth,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 3,
    });
    alarm('OldestReadyAge', jobMetric(METRIC.oldestReadyAge, cloudwatch.Stats.MAXIMUM), {
      description: `The oldest due job has waited more than ${t.oldestReadyAgeSeconds} s, or fetch-ready stopped reporting (missing data counts as breaching)`,
      threshold: t.oldestReadyAgeSeconds,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 2,
      // fetch-ready reports every minute; silence means it is not running.
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
    alarm('FetchReadyErrors', props.fetchReady.metricErrors({ period: Duration.minutes(5) }), {
      description: 'fetch-ready failed 3 or more times in 5 minutes (Data API or EventBridge trouble)',
      threshold: 3,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
    });
    for (const [name, queue] of Object.entries(props.deadLetterQueues)) {
      alarm(
        `${name}NotEmpty`,
        queue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(1), statistic: 'Maximum' }),
        {
          description: `A message is waiting in ${name}: an event or invocation that never reached the job table`,
          threshold: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          evaluationPeriods: 1,
        },
      );
    }

    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', { defaultInterval: Duration.hours(6) });
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Jobs enqueued and attempts finished (per 5 min)',
        width: 12,
        left: [
          jobMetric(METRIC.enqueued, cloudwatch.Stats.SUM),
          succeeded,
          failed,
          jobMetric(METRIC.retried, cloudwatch.Stats.SUM),
          jobMetric(METRIC.leaseExpired, cloudwatch.Stats.SUM),
        ],
      }),
      new cloudwatch.GraphWidget({
        title: 'Failure rate (%)',
        width: 12,
        left: [failureRate],
        leftAnnotations: [{ value: t.failureRatePercent, label: 'alarm' }],
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Queue depth and oldest ready age',
        width: 12,
        left: [jobMetric(METRIC.queueDepth, cloudwatch.Stats.MAXIMUM, Duration.minutes(1))],
        right: [jobMetric(METRIC.oldestReadyAge, cloudwatch.Stats.MAXIMUM, Duration.minutes(1))],
      }),
      new cloudwatch.GraphWidget({
        title: 'Execution time (ms)',
        width: 12,
        left: [
          jobMetric(METRIC.executionTime, cloudwatch.Stats.AVERAGE),
          jobMetric(METRIC.executionTime, cloudwatch.Stats.percentile(95)),
          jobMetric(METRIC.executionTime, cloudwatch.Stats.MAXIMUM),
        ],
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Executor invocations by job type',
        width: 12,
        left: [...props.executors].map(([type, fn]) =>
          fn.metricInvocations({ period: Duration.minutes(5), label: type }),
        ),
      }),
      new cloudwatch.GraphWidget({
        title: 'Executor duration p95 by job type (ms)',
        width: 12,
        left: [...props.executors].map(([type, fn]) =>
          fn.metricDuration({ period: Duration.minutes(5), statistic: 'p95', label: type }),
        ),
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.AlarmStatusWidget({ title: 'Alarms', width: 24, alarms: Object.values(this.alarms) }),
    );
  }
}
