import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import type { Construct } from 'constructs';
import { DEFAULT_CLAIM_BATCH } from '../shared/aws/fetch-ready.js';
import { executorNeeds } from '../shared/job-types/executor-needs.js';
import { createJobTypeRegistry } from '../shared/job-types/index.js';
import { DEFAULT_TYPE_CONCURRENCY } from '../shared/jobs/registry.js';
import { schedules } from '../shared/schedules/definitions.js';
import { JobsDatabase } from './database.js';
import { EXECUTOR_MAX_EVENT_AGE_SECONDS } from './executors.js';
import { JobFunctions, type JobTypeSpec } from './functions.js';
import { type AlarmThresholds, DEFAULT_THRESHOLDS, JobMonitoring } from './monitoring.js';
import { acknowledgeNagFindings } from './nag.js';
import {
  rateLimitEnvironment,
  type ValuationSettings,
  validatePriceSourceUrl,
  validateSender,
  valuationEnvironment,
} from './settings.js';

export interface JobsStackProps extends ValuationSettings, StackProps {
  /** Deletion protection on the cluster (and a final snapshot on delete). Default true; false for dev stacks. */
  deletionProtection?: boolean;
  /** Aurora Serverless v2 capacity range in ACUs. Defaults 0.5 and 4. */
  minCapacity?: number;
  maxCapacity?: number;
  /** Days of automated backups. Default 7. */
  backupRetentionDays?: number;
  /**
   * Reserve concurrency for fetch-ready and the executors. Default false: an account whose Lambda
   * concurrency quota is small (new accounts often have 10 to 50) fails the deploy on any reservation,
   * because at least 100 executions must stay unreserved. See docs/deploy.md.
   */
  reserveConcurrency?: boolean;
  /**
   * With reservations on: each executor's reservation when its job type declares no concurrency of its
   * own. Default 5; 0 = none.
   */
  executorReservedConcurrency?: number;
  /** With reservations on: fetch-ready's reservation. Default 2; 0 = none. */
  fetchReadyReservedConcurrency?: number;
  /**
   * Jobs per claim (default 30), and at most this many claims per fetch-ready run (default: none; a run
   * claims while claims come back full and its time budget lasts, then chains another).
   */
  claimBatchSize?: number;
  maxClaimsPerRun?: number;
  /**
   * The concurrency limit of a job type that declares none: the claim never has more of its jobs running
   * at once, so one backlog cannot take the account's whole Lambda concurrency. Default 50. Every job
   * type the product ships declares its own.
   */
  defaultTypeConcurrency?: number;
  /** Subscribed (by e-mail) to the alarm topic when set. */
  alarmEmail?: string;
  /** The SES-verified sender of notifications. Required; a reserved example domain is refused. */
  notificationFromAddress: string;
  /** The SES configuration set sends use (give the identity's default set, if it has one). */
  notificationConfigurationSet?: string;
  /** Where portfolio valuation reads the BTC/USD price (https). Required. */
  priceSourceUrl: string;
  /** Days finished jobs are kept before the maintenance job prunes them. Default 30 (the code's default). */
  jobRetentionDays?: number;
  /**
   * Notifications claimed per second, across every function: the account's SES sending quota. Default:
   * the type's own (14, SES's default quota).
   */
  notificationRateLimit?: number;
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

  constructor(scope: Construct, id: string, props: JobsStackProps) {
    super(scope, id, props);
    const notificationFromAddress = validateSender(props.notificationFromAddress);
    const priceSourceUrl = validatePriceSourceUrl(props.priceSourceUrl);
    const valuationSettings = valuationEnvironment(props);
    this.database = new JobsDatabase(this, 'Database', {
      databaseName: DATABASE_NAME,
      deletionProtection: props.deletionProtection ?? true,
      minCapacity: props.minCapacity ?? 0.5,
      maxCapacity: props.maxCapacity ?? 4,
      backupRetentionDays: props.backupRetentionDays ?? 7,
    });
    this.bus = new events.EventBus(this, 'JobsBus', { description: 'One job.ready event per claimed job' });

    const jobTypes: JobTypeSpec[] = createJobTypeRegistry()
      .list()
      .map((t) => ({
        type: t.type,
        timeoutSeconds: t.timeoutSeconds,
        leaseSeconds: t.leaseSeconds,
        needs: executorNeeds(t.type),
        concurrency: t.concurrency,
      }));
    const reserve = props.reserveConcurrency ?? false;
    const executorDefault = props.executorReservedConcurrency ?? 5;
    this.functions = new JobFunctions(this, 'Functions', {
      database: this.database,
      bus: this.bus,
      jobTypes,
      schedules,
      serviceName: SERVICE_NAME,
      metricsNamespace: METRICS_NAMESPACE,
      rateLimits: rateLimitEnvironment(props.notificationRateLimit),
      reservedConcurrency: reserve ? (t) => t.concurrency ?? executorDefault : undefined,
      fetchReadyReservedConcurrency: reserve ? (props.fetchReadyReservedConcurrency ?? 2) : undefined,
      claimBatchSize: props.claimBatchSize ?? DEFAULT_CLAIM_BATCH,
      defaultTypeConcurrency: props.defaultTypeConcurrency ?? DEFAULT_TYPE_CONCURRENCY,
      maxClaimsPerRun: props.maxClaimsPerRun,
      notificationFromAddress,
      notificationConfigurationSet: props.notificationConfigurationSet,
      priceSourceUrl,
      valuationSettings,
      jobRetentionDays: props.jobRetentionDays,
    });
    this.monitoring = new JobMonitoring(this, 'Monitoring', {
      namespace: METRICS_NAMESPACE,
      serviceName: SERVICE_NAME,
      thresholds: { ...DEFAULT_THRESHOLDS, ...props.thresholds },
      alarmEmail: props.alarmEmail,
      fetchReady: this.functions.fetchReady,
      executors: new Map(
        jobTypes.map((t) => [
          t.type,
          { fn: this.functions.executors.get(t.type)!, maxEventAgeSeconds: EXECUTOR_MAX_EVENT_AGE_SECONDS },
        ]),
      ),
      rules: this.functions.rules,
      logGroups: this.functions.allFunctions.map((fn) => fn.logGroup),
      deadLetterQueues: {
        FunctionFailures: this.functions.functionFailures,
        DeliveryFailures: this.functions.deliveryFailures,
      },
    });

    new CfnOutput(this, 'ClusterArn', { value: this.database.cluster.clusterArn });
    new CfnOutput(this, 'SecretArn', { value: this.database.masterSecret.secretArn });
    new CfnOutput(this, 'AppSecretArn', { value: this.database.appSecret.secretArn });
    new CfnOutput(this, 'DatabaseName', { value: DATABASE_NAME });
    new CfnOutput(this, 'BusName', { value: this.bus.eventBusName });
    new CfnOutput(this, 'FetchReadyFunctionName', { value: this.functions.fetchReady.functionName });
    new CfnOutput(this, 'AlarmTopicArn', { value: this.monitoring.topic.topicArn });

    acknowledgeNagFindings({ functions: this.functions, database: this.database });
  }
}
