import { Duration } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import type { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { RecurringSchedule } from '../shared/schedules/definitions.js';
import { Executors, type ExecutorsProps } from './executors.js';
import { FetchReady } from './fetch-ready.js';
import { type FunctionEnvironment, pascalCase } from './lambda-function.js';
import { Migrations } from './migrations.js';
import { Schedules } from './schedules.js';

export type { JobTypeSpec } from './executors.js';
export { pascalCase };
export { migrationsHash } from './migrations.js';

export interface JobFunctionsProps
  extends FunctionEnvironment,
    Omit<ExecutorsProps, keyof FunctionEnvironment | 'functionFailures' | 'deliveryFailures'> {
  schedules: readonly RecurringSchedule[];
  /** undefined or 0 = no reservation. */
  fetchReadyReservedConcurrency?: number;
  claimBatchSize: number;
  maxClaimsPerRun?: number;
}

/**
 * The Lambda functions and their triggers, one construct per part: `Migrations` (the schema and the
 * application user), `FetchReady` (claims and fans out), `Executors` (one per job type) and `Schedules`
 * (recurring jobs), with the two dead-letter queues they share.
 *
 * Deploy order: CloudFormation orders only what references what, so every function and every rule here
 * explicitly waits for the migrations resource. On the first deploy nothing runs before the writer is
 * up and the schema exists; on later deploys new code goes live only after its migrations ran (which is
 * why migrations are expand-only: the old code keeps running against the new schema until then).
 */
export class JobFunctions extends Construct {
  readonly migrations: Migrations;
  readonly fetchReady: NodejsFunction;
  readonly executors: ReadonlyMap<string, NodejsFunction>;
  readonly executorRules: ReadonlyMap<string, events.Rule>;
  readonly schedule: NodejsFunction;
  /** Executor and schedule invocations that failed inside Lambda (the table never saw their outcome). */
  readonly functionFailures: sqs.Queue;
  /** Events EventBridge could not hand to a function. */
  readonly deliveryFailures: sqs.Queue;
  /** The functions written for this stack (not the CDK Provider framework's). */
  readonly allFunctions: NodejsFunction[];
  /** Every rule that invokes a function, by a name for its alarms, with its bus unless the default. */
  readonly rules: ReadonlyMap<string, { rule: events.Rule; bus?: events.IEventBus }>;

  constructor(scope: Construct, id: string, props: JobFunctionsProps) {
    super(scope, id);
    const dlq = (qid: string) =>
      new sqs.Queue(this, qid, {
        retentionPeriod: Duration.days(14),
        encryption: sqs.QueueEncryption.SQS_MANAGED,
        enforceSSL: true,
      });
    this.functionFailures = dlq('FunctionFailures');
    this.deliveryFailures = dlq('DeliveryFailures');
    const env: FunctionEnvironment = {
      database: props.database,
      bus: props.bus,
      serviceName: props.serviceName,
      metricsNamespace: props.metricsNamespace,
      defaultTypeConcurrency: props.defaultTypeConcurrency,
      rateLimits: props.rateLimits,
    };

    this.migrations = new Migrations(this, 'Migrations', env);
    const fetchReady = new FetchReady(this, 'FetchReady', {
      ...env,
      reservedConcurrency: props.fetchReadyReservedConcurrency,
      claimBatchSize: props.claimBatchSize,
      maxClaimsPerRun: props.maxClaimsPerRun,
    });
    const executors = new Executors(this, 'Executors', {
      ...props,
      ...env,
      functionFailures: this.functionFailures,
      deliveryFailures: this.deliveryFailures,
    });
    const schedules = new Schedules(this, 'Schedules', {
      ...env,
      schedules: props.schedules,
      functionFailures: this.functionFailures,
      deliveryFailures: this.deliveryFailures,
    });
    this.fetchReady = fetchReady.fn;
    this.executors = executors.functions;
    this.executorRules = executors.rules;
    this.schedule = schedules.fn;
    this.allFunctions = [this.migrations.fn, this.fetchReady, ...this.executors.values(), this.schedule];
    const onBus = (rule: events.Rule) => ({ rule, bus: props.bus });
    this.rules = new Map<string, { rule: events.Rule; bus?: events.IEventBus }>([
      ['FetchReadyEveryMinute', { rule: fetchReady.everyMinute }],
      ['FetchReadyOnEnqueue', onBus(fetchReady.onEnqueue)],
      ...[...executors.rules].map(([type, rule]) => [`Executor${pascalCase(type)}`, onBus(rule)] as const),
      ...[...schedules.rules].map(([name, rule]) => [`Schedule${pascalCase(name)}`, { rule }] as const),
    ]);

    for (const part of [fetchReady, executors, schedules]) {
      for (const c of part.node.findAll()) {
        if (c instanceof lambda.Function || c instanceof events.Rule)
          c.node.addDependency(this.migrations.resource);
      }
    }
  }
}
