import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { CustomResource, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as destinations from 'aws-cdk-lib/aws-lambda-destinations';
import { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as cr from 'aws-cdk-lib/custom-resources';
import { Construct } from 'constructs';
import {
  JOB_EVENT_DETAIL_TYPE,
  JOB_EVENT_SOURCE,
  JOBS_ENQUEUED_DETAIL_TYPE,
} from '../shared/aws/eventbridge-publisher.js';
import { SETTING_NAMES } from '../shared/domain/settings.js';
import { toEventBridgeExpression } from '../shared/schedules/cron.js';
import type { RecurringSchedule } from '../shared/schedules/definitions.js';
import {
  FUNCTION_ENTRIES,
  type FunctionName,
  LAMBDA_RUNTIME,
  MIGRATIONS_DIR_IN_BUNDLE,
  nodejsBundling,
  PROJECT_ROOT,
} from './bundling.js';
import type { JobsDatabase } from './database.js';

/** What the stack needs to know of a job type (from the registry: the single list). */
export interface JobTypeSpec {
  type: string;
  timeoutSeconds: number;
  leaseSeconds: number;
  /** The types its jobs enqueue as follow-ups: its executor may nudge fetch-ready (PutEvents). */
  enqueues: readonly string[];
}

export interface JobFunctionsProps {
  database: JobsDatabase;
  bus: events.IEventBus;
  jobTypes: readonly JobTypeSpec[];
  schedules: readonly RecurringSchedule[];
  serviceName: string;
  metricsNamespace: string;
  /** Per executor function; undefined or 0 = no reservation. */
  executorReservedConcurrency?: number;
  /** undefined or 0 = no reservation. */
  fetchReadyReservedConcurrency?: number;
  claimBatchSize: number;
  maxClaimsPerRun: number;
  notificationFromAddress: string;
  priceSourceUrl: string;
  /** Set on the executors when given; otherwise the maintenance job keeps 30 days. */
  jobRetentionDays?: number;
}

/** Lambda's maximum timeout. */
const MAX_LAMBDA_TIMEOUT_SECONDS = 900;
/** Time an executor keeps after the job's own timeout fired, to record the failed attempt. */
const EXECUTOR_TIMEOUT_MARGIN_SECONDS = 30;

export function pascalCase(text: string): string {
  return text.replace(/(^|-)([a-z0-9])/g, (_, __, c: string) => c.toUpperCase());
}

/** A hash of the SQL migrations: the migrate custom resource changes (and runs) whenever they do. */
export function migrationsHash(dir = path.join(PROJECT_ROOT, 'shared/db/migrations')): string {
  const hash = createHash('sha256');
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith('.sql'))
    .sort()) {
    hash
      .update(file)
      .update('\0')
      .update(readFileSync(path.join(dir, file)))
      .update('\0');
  }
  return hash.digest('hex');
}

/**
 * The Lambda functions, their triggers and their permissions. Each function has its own role with exactly
 * what it uses: its log group, X-Ray, the Data API on the cluster with its secret, and, where needed,
 * PutEvents on the jobs bus or SES on the sender identity.
 */
export class JobFunctions extends Construct {
  readonly fetchReady: NodejsFunction;
  readonly executors = new Map<string, NodejsFunction>();
  readonly schedule: NodejsFunction;
  readonly migrate: NodejsFunction;
  /** Executor and schedule invocations that failed inside Lambda (the table never saw their outcome). */
  readonly functionFailures: sqs.Queue;
  /** Events EventBridge could not hand to a function. */
  readonly deliveryFailures: sqs.Queue;
  readonly migrations: CustomResource;
  readonly allFunctions: NodejsFunction[] = [];

  private readonly props: JobFunctionsProps;

  constructor(scope: Construct, id: string, props: JobFunctionsProps) {
    super(scope, id);
    this.props = props;
    const dlq = (qid: string) =>
      new sqs.Queue(this, qid, {
        retentionPeriod: Duration.days(14),
        encryption: sqs.QueueEncryption.SQS_MANAGED,
        enforceSSL: true,
      });
    this.functionFailures = dlq('FunctionFailures');
    this.deliveryFailures = dlq('DeliveryFailures');

    // fetch-ready: every minute, and at once on a `jobs.enqueued` nudge. A missed tick is replaced by the
    // next one, so neither Lambda nor EventBridge retries it, and a throttled tick expires within a minute
    // instead of being replayed late.
    this.fetchReady = this.createFunction('FetchReady', 'fetch-ready', {
      timeout: Duration.seconds(90),
      retryAttempts: 0,
      maxEventAge: Duration.seconds(60),
      reservedConcurrency: props.fetchReadyReservedConcurrency,
      environment: {
        CLAIM_BATCH_SIZE: String(props.claimBatchSize),
        MAX_CLAIMS_PER_RUN: String(props.maxClaimsPerRun),
      },
    });
    props.bus.grantPutEventsTo(this.fetchReady);
    new events.Rule(this, 'FetchReadyEveryMinute', {
      description: 'Claims due jobs and fans them out to the executors',
      schedule: events.Schedule.expression('rate(1 minute)'),
      targets: [
        new targets.LambdaFunction(this.fetchReady, { retryAttempts: 0, maxEventAge: Duration.seconds(60) }),
      ],
    });
    new events.Rule(this, 'FetchReadyOnEnqueue', {
      description: 'Runs fetch-ready at once when new jobs are due',
      eventBus: props.bus,
      eventPattern: { source: [JOB_EVENT_SOURCE], detailType: [JOBS_ENQUEUED_DETAIL_TYPE] },
      targets: [
        new targets.LambdaFunction(this.fetchReady, { retryAttempts: 0, maxEventAge: Duration.seconds(60) }),
      ],
    });

    // One executor function and one rule per job type, all from the same bundle.
    for (const jobType of props.jobTypes) {
      const fnId = `Executor${pascalCase(jobType.type)}`;
      // A delivery older than the lease is useless: the attempt has been rescued and will run again.
      const staleAfter = Duration.seconds(jobType.leaseSeconds);
      const fn = this.createFunction(fnId, 'executor', {
        timeout: Duration.seconds(
          Math.min(MAX_LAMBDA_TIMEOUT_SECONDS, jobType.timeoutSeconds + EXECUTOR_TIMEOUT_MARGIN_SECONDS),
        ),
        // The job table owns retries (backoff, max attempts); a Lambda retry would run the attempt twice.
        retryAttempts: 0,
        maxEventAge: staleAfter,
        onFailure: this.functionFailures,
        reservedConcurrency: props.executorReservedConcurrency,
        environment: {
          JOB_TYPE: jobType.type,
          // The same names the local runtime reads (shared/domain/settings.ts).
          [SETTING_NAMES.notificationFromAddress]: props.notificationFromAddress,
          [SETTING_NAMES.priceUrl]: props.priceSourceUrl,
          ...(props.jobRetentionDays === undefined
            ? {}
            : { [SETTING_NAMES.retentionDays]: String(props.jobRetentionDays) }),
        },
      });
      if (jobType.type === 'notification') this.grantSendEmail(fn, props.notificationFromAddress);
      // Executors whose jobs enqueue follow-ups nudge fetch-ready after a run (functions/lib/follow-up-nudge.ts).
      if (jobType.enqueues.length > 0) props.bus.grantPutEventsTo(fn);
      new events.Rule(this, `${fnId}Rule`, {
        description: `Routes ${jobType.type} jobs to their executor`,
        eventBus: props.bus,
        eventPattern: {
          source: [JOB_EVENT_SOURCE],
          detailType: [JOB_EVENT_DETAIL_TYPE],
          detail: { jobType: [jobType.type] },
        },
        targets: [
          new targets.LambdaFunction(fn, {
            deadLetterQueue: this.deliveryFailures,
            retryAttempts: 10,
            maxEventAge: staleAfter,
          }),
        ],
      });
      this.executors.set(jobType.type, fn);
    }

    // Recurring schedules: one rule each, all invoking the schedule function with the schedule's name and
    // the tick's scheduled time. Enqueueing is idempotent per tick, so retries are safe.
    this.schedule = this.createFunction('Schedule', 'schedule', {
      timeout: Duration.seconds(60),
      retryAttempts: 2,
      maxEventAge: Duration.hours(1),
      onFailure: this.functionFailures,
    });
    props.bus.grantPutEventsTo(this.schedule);
    for (const s of props.schedules) {
      new events.Rule(this, `Schedule${pascalCase(s.name)}`, {
        description: s.description,
        schedule: events.Schedule.expression(toEventBridgeExpression(s.expression)),
        targets: [
          new targets.LambdaFunction(this.schedule, {
            event: events.RuleTargetInput.fromObject({ schedule: s.name, time: events.EventField.time }),
            deadLetterQueue: this.deliveryFailures,
            retryAttempts: 10,
            maxEventAge: Duration.hours(2),
          }),
        ],
      });
    }

    // Migrations: a custom resource applies them through the Data API when the stack is created and on
    // every deploy that changes the SQL (its property is the files' hash). Applying is idempotent, so a
    // deploy with unchanged SQL loses nothing by skipping it.
    this.migrate = this.createFunction('Migrate', 'migrate', {
      timeout: Duration.minutes(10),
      retryAttempts: 0,
      copyMigrations: true,
      environment: { LANA_MIGRATIONS_DIR: MIGRATIONS_DIR_IN_BUNDLE },
    });
    const providerLogs = new logs.LogGroup(this, 'MigrationsProviderLogs', {
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const provider = new cr.Provider(this, 'MigrationsProvider', {
      onEventHandler: this.migrate,
      logGroup: providerLogs,
    });
    this.migrations = new CustomResource(this, 'Migrations', {
      serviceToken: provider.serviceToken,
      resourceType: 'Custom::LanaMigrations',
      properties: { MigrationsHash: migrationsHash() },
    });
    // The writer instance must be up before the Data API can run anything.
    this.migrations.node.addDependency(props.database.cluster);
  }

  private createFunction(
    id: string,
    entry: FunctionName,
    options: {
      timeout: Duration;
      retryAttempts: number;
      maxEventAge?: Duration;
      onFailure?: sqs.IQueue;
      reservedConcurrency?: number;
      environment?: Record<string, string>;
      copyMigrations?: boolean;
    },
  ): NodejsFunction {
    const { database, bus } = this.props;
    const logGroup = new logs.LogGroup(this, `${id}Logs`, {
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // An own role instead of the managed AWSLambdaBasicExecutionRole: logs only to this log group.
    const role = new iam.Role(this, `${id}Role`, {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
    });
    logGroup.grantWrite(role);
    const fn = new NodejsFunction(this, id, {
      entry: path.join(PROJECT_ROOT, FUNCTION_ENTRIES[entry]),
      handler: 'handler',
      projectRoot: PROJECT_ROOT,
      depsLockFilePath: path.join(PROJECT_ROOT, 'package-lock.json'),
      runtime: LAMBDA_RUNTIME,
      architecture: lambda.Architecture.ARM_64,
      memorySize: 512,
      timeout: options.timeout,
      role,
      logGroup,
      tracing: lambda.Tracing.ACTIVE,
      retryAttempts: options.retryAttempts,
      maxEventAge: options.maxEventAge,
      onFailure: options.onFailure ? new destinations.SqsDestination(options.onFailure) : undefined,
      reservedConcurrentExecutions: options.reservedConcurrency ? options.reservedConcurrency : undefined,
      bundling: nodejsBundling({ copyMigrations: options.copyMigrations }),
      environment: {
        DATA_API_RESOURCE_ARN: database.cluster.clusterArn,
        DATA_API_SECRET_ARN: database.secret.secretArn,
        DATA_API_DATABASE: database.databaseName,
        JOBS_BUS_NAME: bus.eventBusName,
        POWERTOOLS_SERVICE_NAME: this.props.serviceName,
        POWERTOOLS_METRICS_NAMESPACE: this.props.metricsNamespace,
        // Results can hold payload data; traces keep timings only.
        POWERTOOLS_TRACER_CAPTURE_RESPONSE: 'false',
        NODE_OPTIONS: '--enable-source-maps',
        ...options.environment,
      },
    });
    database.cluster.grantDataApiAccess(fn);
    this.allFunctions.push(fn);
    return fn;
  }

  /** SES authorises a send on the identity of the sender: the address itself or its domain. */
  private grantSendEmail(fn: NodejsFunction, fromAddress: string): void {
    const stack = Stack.of(this);
    const domain = fromAddress.split('@')[1] ?? fromAddress;
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['ses:SendEmail'],
        resources: [fromAddress, domain].map((identity) =>
          stack.formatArn({ service: 'ses', resource: 'identity', resourceName: identity }),
        ),
      }),
    );
  }
}
