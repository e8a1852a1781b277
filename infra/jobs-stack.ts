import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import type { Construct } from 'constructs';
import { createJobTypeRegistry } from '../shared/job-types/index.js';
import { DEFAULT_CLAIM_BATCH } from '../shared/jobs/fan-out.js';
import { schedules } from '../shared/schedules/definitions.js';
import { JobsDatabase } from './database.js';
import { JobFunctions } from './functions.js';
import { type AlarmThresholds, DEFAULT_THRESHOLDS, JobMonitoring } from './monitoring.js';
import { acknowledgeNagFindings } from './nag.js';

export interface JobsStackProps extends StackProps {
  /** Deletion protection on the cluster (and a final snapshot on delete). Default true; false for dev stacks. */
  deletionProtection?: boolean;
  /** Aurora Serverless v2 capacity range in ACUs. Defaults 0.5 and 4. */
  minCapacity?: number;
  maxCapacity?: number;
  /** Days of automated backups. Default 7. */
  backupRetentionDays?: number;
  /** Reserved concurrency of each executor function: caps database pressure. Default 5; 0 = none. */
  executorReservedConcurrency?: number;
  /** Reserved concurrency of fetch-ready. Default 2; 0 = none. */
  fetchReadyReservedConcurrency?: number;
  /** Jobs per claim (default 30) and claims per fetch-ready run while claims come back full (default 4). */
  claimBatchSize?: number;
  maxClaimsPerRun?: number;
  /** Subscribed (by e-mail) to the alarm topic when set. */
  alarmEmail?: string;
  /** The SES-verified sender of notifications. */
  notificationFromAddress?: string;
  /** Where portfolio valuation reads the BTC/USD price. */
  priceSourceUrl?: string;
  /** Days finished jobs are kept before the maintenance job prunes them. Default 30 (the code's default). */
  jobRetentionDays?: number;
  thresholds?: Partial<AlarmThresholds>;
}

export const SERVICE_NAME = 'lana-jobs';
export const METRICS_NAMESPACE = 'LanaJobs';
export const DATABASE_NAME = 'lana';

/**
 * The job system on AWS: Aurora PostgreSQL (Data API) holds the jobs; an EventBridge schedule runs
 * fetch-ready every minute, which publishes one event per claimed job to the jobs bus; one rule and one
 * executor function per job type run them. The job types and recurring schedules come from the same
 * lists the local runtime uses.
 */
export class JobsStack extends Stack {
  readonly database: JobsDatabase;
  readonly bus: events.EventBus;
  readonly functions: JobFunctions;
  readonly monitoring: JobMonitoring;

  constructor(scope: Construct, id: string, props: JobsStackProps = {}) {
    super(scope, id, props);
    this.database = new JobsDatabase(this, 'Database', {
      databaseName: DATABASE_NAME,
      deletionProtection: props.deletionProtection ?? true,
      minCapacity: props.minCapacity ?? 0.5,
      maxCapacity: props.maxCapacity ?? 4,
      backupRetentionDays: props.backupRetentionDays ?? 7,
    });
    this.bus = new events.EventBus(this, 'JobsBus', { description: 'One job.ready event per claimed job' });

    const jobTypes = createJobTypeRegistry()
      .list()
      .map(({ type, timeoutSeconds, leaseSeconds, enqueues }) => ({
        type,
        timeoutSeconds,
        leaseSeconds,
        enqueues,
      }));
    this.functions = new JobFunctions(this, 'Functions', {
      database: this.database,
      bus: this.bus,
      jobTypes,
      schedules,
      serviceName: SERVICE_NAME,
      metricsNamespace: METRICS_NAMESPACE,
      executorReservedConcurrency: props.executorReservedConcurrency ?? 5,
      fetchReadyReservedConcurrency: props.fetchReadyReservedConcurrency ?? 2,
      claimBatchSize: props.claimBatchSize ?? DEFAULT_CLAIM_BATCH,
      maxClaimsPerRun: props.maxClaimsPerRun ?? 4,
      notificationFromAddress: props.notificationFromAddress ?? 'no-reply@example.com',
      priceSourceUrl:
        props.priceSourceUrl ?? 'https://api.coingecko.com/api/v3/simple/price?ids=bitcoin&vs_currencies=usd',
      jobRetentionDays: props.jobRetentionDays,
    });
    this.monitoring = new JobMonitoring(this, 'Monitoring', {
      namespace: METRICS_NAMESPACE,
      serviceName: SERVICE_NAME,
      thresholds: { ...DEFAULT_THRESHOLDS, ...props.thresholds },
      alarmEmail: props.alarmEmail,
      fetchReady: this.functions.fetchReady,
      executors: this.functions.executors,
      deadLetterQueues: {
        FunctionFailures: this.functions.functionFailures,
        DeliveryFailures: this.functions.deliveryFailures,
      },
    });

    new CfnOutput(this, 'ClusterArn', { value: this.database.cluster.clusterArn });
    new CfnOutput(this, 'SecretArn', { value: this.database.secret.secretArn });
    new CfnOutput(this, 'DatabaseName', { value: DATABASE_NAME });
    new CfnOutput(this, 'BusName', { value: this.bus.eventBusName });
    new CfnOutput(this, 'FetchReadyFunctionName', { value: this.functions.fetchReady.functionName });
    new CfnOutput(this, 'AlarmTopicArn', { value: this.monitoring.topic.topicArn });

    acknowledgeNagFindings({ functions: this.functions, database: this.database });
  }
}
