import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as events from 'aws-cdk-lib/aws-events';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { METRIC } from '../shared/aws/powertools-metrics.js';
import { pascalCase } from './lambda-function.js';

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
  executors: ReadonlyMap<string, MonitoredExecutor>;
  /** Every rule that invokes a function, by a name for its alarm, with its bus unless the default. */
  rules: ReadonlyMap<string, { rule: events.IRule; bus?: events.IEventBus }>;
  /** The log groups holding the functions' EMF records (per-type figures are read from them). */
  logGroups: readonly logs.ILogGroup[];
  deadLetterQueues: Record<string, sqs.IQueue>;
}

export interface MonitoredExecutor {
  fn: lambda.IFunction;
  /** How old an event may get before Lambda drops it (the executor's maxEventAge, inside the dispatch lease). */
  maxEventAgeSeconds: number;
}

/**
 * Alarms on the job system's signals (failure rate, long-running jobs, queue backup) and on anything
 * landing in a dead-letter queue, all notifying one SNS topic; and a dashboard of the job metrics.
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
      // A period without successes has no `s` datapoint at all: FILL makes it 0, so a period of only
      // failures reads as 100 % (and alarms) instead of missing data. No traffic (or too little to
      // judge) reads as 0 %, not as missing data or a division by zero.
      expression: `IF((FILL(s, 0) + FILL(f, 0)) >= ${t.failureRateMinAttempts}, 100 * FILL(f, 0) / (FILL(s, 0) + FILL(f, 0)), 0)`,
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
    alarm('LongRunningJobs', jobMetric(METRIC.runningPastTimeout, cloudwatch.Stats.MAXIMUM), {
      description:
        'An attempt is still running past its job type’s timeout (read from the table by fetch-ready’s scheduled run, before its lease expires)',
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
    });
    alarm('LeasesExpired', jobMetric(METRIC.leaseExpired, cloudwatch.Stats.SUM), {
      description:
        'A begun attempt outlived its lease (timeout + grace): its executor hung or crashed. fetch-ready rescued it under the retry rule.',
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

    // Lambda's asynchronous queue in front of each executor (aws-facts §8 #26, #28): events it dropped
    // (too old, or out of retries), events waiting long, and invocations refused for concurrency.
    for (const [type, { fn, maxEventAgeSeconds }] of props.executors) {
      const name = pascalCase(type);
      const lambdaMetric = (metricName: string, statistic: string) =>
        new cloudwatch.Metric({
          namespace: 'AWS/Lambda',
          metricName,
          dimensionsMap: { FunctionName: fn.functionName },
          statistic,
          period: Duration.minutes(5),
        });
      alarm(`${name}AsyncEventsDropped`, lambdaMetric('AsyncEventsDropped', cloudwatch.Stats.SUM), {
        description: `Lambda dropped ${type} events before running them (throttled or failing until they were ${maxEventAgeSeconds} s old): their claims are handed back uncounted when the dispatch lease expires`,
        threshold: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: 1,
      });
      // Half the event's allowed age: past that, events are close to being dropped.
      const ageThresholdMs = Math.round((maxEventAgeSeconds * 1000) / 2);
      alarm(`${name}AsyncEventAge`, lambdaMetric('AsyncEventAge', cloudwatch.Stats.MAXIMUM), {
        description: `${type} events waited more than ${ageThresholdMs / 1000} s in Lambda's queue before running (throttling or errors delaying them)`,
        threshold: ageThresholdMs,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 2,
      });
      alarm(
        `${name}Throttles`,
        fn.metricThrottles({ period: Duration.minutes(5), statistic: cloudwatch.Stats.SUM }),
        {
          description: `Lambda throttled the ${type} executor in 2 of 3 five-minute periods (account concurrency, or its reservation): its events wait and age`,
          threshold: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          evaluationPeriods: 3,
          datapointsToAlarm: 2,
        },
      );
    }
    for (const [name, { rule, bus }] of props.rules) {
      const failed = new cloudwatch.Metric({
        namespace: 'AWS/Events',
        metricName: 'FailedInvocations',
        // A rule on a custom bus reports under both its bus and its name; on the default bus, its name.
        dimensionsMap: bus
          ? { EventBusName: bus.eventBusName, RuleName: rule.ruleName }
          : { RuleName: rule.ruleName },
        statistic: cloudwatch.Stats.SUM,
        period: Duration.minutes(5),
      });
      alarm(`${name}FailedInvocations`, failed, {
        description: `EventBridge could not invoke the target of rule ${name} (permissions, a deleted function, or retries exhausted): see the DeliveryFailures queue`,
        threshold: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: 1,
      });
    }

    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', { defaultInterval: Duration.hours(6) });
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Jobs enqueued and attempts finished (per 5 min)',
        width: 12,
        left: [
          jobMetric(METRIC.enqueuedLastMinute, cloudwatch.Stats.SUM),
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
        left: [...props.executors].map(([type, { fn }]) =>
          fn.metricInvocations({ period: Duration.minutes(5), label: type }),
        ),
      }),
      new cloudwatch.GraphWidget({
        title: 'Executor duration p95 by job type (ms)',
        width: 12,
        left: [...props.executors].map(([type, { fn }]) =>
          fn.metricDuration({ period: Duration.minutes(5), statistic: 'p95', label: type }),
        ),
      }),
    );
    // Per-type figures beside the service-level series above: the EMF records carry the job type as a
    // field, so Logs Insights groups them by it (the metrics keep only the `service` dimension the
    // alarms match).
    this.dashboard.addWidgets(
      new cloudwatch.LogQueryWidget({
        title: 'Outcomes and execution time by job type',
        width: 24,
        height: 6,
        logGroupNames: props.logGroups.map((g) => g.logGroupName),
        view: cloudwatch.LogQueryVisualizationType.TABLE,
        queryLines: [
          `fields jobType, ${METRIC.succeeded}, ${METRIC.failed}, ${METRIC.retried}, ${METRIC.leaseExpired}, ${METRIC.executionTime}`,
          'filter ispresent(jobType)',
          `stats sum(${METRIC.succeeded}) as succeeded, sum(${METRIC.retried}) as retried, sum(${METRIC.failed}) as failed, sum(${METRIC.leaseExpired}) as leaseExpired, avg(${METRIC.executionTime}) as avgMs, pct(${METRIC.executionTime}, 95) as p95Ms, max(${METRIC.executionTime}) as maxMs by jobType`,
          'sort jobType',
        ],
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Executor async queue: oldest event age (ms) and dropped events',
        width: 12,
        left: [...props.executors].map(
          ([type, { fn }]) =>
            new cloudwatch.Metric({
              namespace: 'AWS/Lambda',
              metricName: 'AsyncEventAge',
              dimensionsMap: { FunctionName: fn.functionName },
              statistic: cloudwatch.Stats.MAXIMUM,
              period: Duration.minutes(5),
              label: type,
            }),
        ),
        right: [...props.executors].map(
          ([type, { fn }]) =>
            new cloudwatch.Metric({
              namespace: 'AWS/Lambda',
              metricName: 'AsyncEventsDropped',
              dimensionsMap: { FunctionName: fn.functionName },
              statistic: cloudwatch.Stats.SUM,
              period: Duration.minutes(5),
              label: `${type} dropped`,
            }),
        ),
      }),
      new cloudwatch.GraphWidget({
        title: 'Throttles by executor',
        width: 12,
        left: [...props.executors].map(([type, { fn }]) =>
          fn.metricThrottles({ period: Duration.minutes(5), statistic: cloudwatch.Stats.SUM, label: type }),
        ),
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.AlarmStatusWidget({ title: 'Alarms', width: 24, alarms: Object.values(this.alarms) }),
    );
  }
}
