import path from 'node:path';
import { type Duration, RemovalPolicy } from 'aws-cdk-lib';
import type * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as destinations from 'aws-cdk-lib/aws-lambda-destinations';
import { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { DEFAULT_TYPE_CONCURRENCY_ENV } from '../shared/jobs/registry.js';
import {
  FUNCTION_ENTRIES,
  type FunctionName,
  LAMBDA_RUNTIME,
  nodejsBundling,
  PROJECT_ROOT,
} from './bundling.js';
import type { JobsDatabase } from './database.js';

/** What every function of the stack is given. */
export interface FunctionEnvironment {
  database: JobsDatabase;
  bus: events.IEventBus;
  serviceName: string;
  metricsNamespace: string;
  /** The concurrency limit of a job type that declares none (every function that claims reads it). */
  defaultTypeConcurrency: number;
  /** The rate limits every claiming function keeps (`JOBS_RATE_LIMITS`, from `rateLimitEnvironment`). */
  rateLimits?: Readonly<Record<string, string>>;
}

export interface JobsFunctionOptions {
  entry: FunctionName;
  timeout: Duration;
  retryAttempts: number;
  maxEventAge?: Duration;
  onFailure?: sqs.IQueue;
  /** undefined or 0: no reservation. */
  reservedConcurrency?: number;
  environment?: Record<string, string>;
  copyMigrations?: boolean;
  /** The secret the function's Data API calls present: the application user's unless said otherwise. */
  secret?: secretsmanager.ISecret;
}

/** The Data API actions (what `grantDataApiAccess` grants, without its read access to the master secret). */
export const DATA_API_ACTIONS = [
  'rds-data:BatchExecuteStatement',
  'rds-data:BeginTransaction',
  'rds-data:CommitTransaction',
  'rds-data:ExecuteStatement',
  'rds-data:RollbackTransaction',
];

export function pascalCase(text: string): string {
  return text.replace(/(^|-)([a-z0-9])/g, (_, __, c: string) => c.toUpperCase());
}

/**
 * One Lambda function of the stack, created in `scope` as `<id>`, `<id>Logs` and `<id>Role`. Its own
 * role holds exactly what it uses: its log group, X-Ray, and the Data API on the cluster with one
 * secret (the application user's, or the master's for migrations). Callers add what else it needs.
 */
export function createJobsFunction(
  scope: Construct,
  id: string,
  env: FunctionEnvironment,
  options: JobsFunctionOptions,
): NodejsFunction {
  const { database, bus } = env;
  const secret = options.secret ?? database.appSecret;
  const logGroup = new logs.LogGroup(scope, `${id}Logs`, {
    retention: logs.RetentionDays.ONE_MONTH,
    removalPolicy: RemovalPolicy.DESTROY,
  });
  // An own role instead of the managed AWSLambdaBasicExecutionRole: logs only to this log group.
  const role = new iam.Role(scope, `${id}Role`, {
    assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
  });
  logGroup.grantWrite(role);
  const fn = new NodejsFunction(scope, id, {
    entry: path.join(PROJECT_ROOT, FUNCTION_ENTRIES[options.entry]),
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
      DATA_API_SECRET_ARN: secret.secretArn,
      DATA_API_DATABASE: database.databaseName,
      JOBS_BUS_NAME: bus.eventBusName,
      POWERTOOLS_SERVICE_NAME: env.serviceName,
      POWERTOOLS_METRICS_NAMESPACE: env.metricsNamespace,
      [DEFAULT_TYPE_CONCURRENCY_ENV]: String(env.defaultTypeConcurrency),
      // Results can hold payload data; traces keep timings only.
      POWERTOOLS_TRACER_CAPTURE_RESPONSE: 'false',
      NODE_OPTIONS: '--enable-source-maps',
      ...env.rateLimits,
      ...options.environment,
    },
  });
  iam.Grant.addToPrincipal({
    grantee: fn,
    actions: DATA_API_ACTIONS,
    resourceArns: [database.cluster.clusterArn],
  });
  secret.grantRead(fn);
  return fn;
}
