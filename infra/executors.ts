import { Duration, Stack } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import type { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { JOB_EVENT_DETAIL_TYPE, JOB_EVENT_SOURCE } from '../shared/aws/eventbridge-publisher.js';
import { SETTING_NAMES } from '../shared/domain/settings.js';
import type { ExecutorNeed } from '../shared/job-types/executor-needs.js';
import { DISPATCH_LEASE_SECONDS } from '../shared/jobs/registry.js';
import { createJobsFunction, type FunctionEnvironment, pascalCase } from './lambda-function.js';

/** What the stack needs to know of a job type (from the registry and `EXECUTOR_NEEDS`). */
export interface JobTypeSpec {
  type: string;
  timeoutSeconds: number;
  leaseSeconds: number;
  /** What its executor needs beyond the Data API (shared/job-types/executor-needs.ts). */
  needs: readonly ExecutorNeed[];
  /** The type's own concurrency, when it declares one: its reservation when reservations are on. */
  concurrency?: number;
}

export interface ExecutorsProps extends FunctionEnvironment {
  jobTypes: readonly JobTypeSpec[];
  /**
   * Reserved concurrency per executor, or undefined for none. Off by default: an account with a small
   * Lambda quota fails the deploy on any reservation (docs/deploy.md).
   */
  reservedConcurrency?: (jobType: JobTypeSpec) => number | undefined;
  functionFailures: sqs.IQueue;
  deliveryFailures: sqs.IQueue;
  notificationFromAddress: string;
  /** The SES configuration set sends go through (the identity's default one included), if any. */
  notificationConfigurationSet?: string;
  priceSourceUrl: string;
  /**
   * The valuation settings given to the stack, as variables (`valuationEnvironment`): set only on the
   * executors whose type declares `valuation-settings`.
   */
  valuationSettings?: Readonly<Record<string, string>>;
  /** Set on the executors when given; otherwise the maintenance job keeps 30 days. */
  jobRetentionDays?: number;
}

/**
 * Lambda's maximum timeout: an executor invocation takes its type's next due job while a whole attempt
 * still fits (functions/executor/handler.ts), so a long timeout keeps its slot busy for as long as there is
 * work; Lambda bills the time used, not the timeout.
 */
const EXECUTOR_TIMEOUT_SECONDS = 900;
/** Time a claim's dispatch lease keeps for publishing its event, before Lambda's queue holds it. */
const PUBLISH_ALLOWANCE_SECONDS = 30;
/**
 * How old an executor's event may get in Lambda's (and EventBridge's) retries before it is dropped: inside
 * the claim's dispatch lease, so an event that is still delivered arrives while its claim holds (later, the
 * start would refuse it anyway). 60 s, Lambda's and EventBridge's smallest.
 */
export const EXECUTOR_MAX_EVENT_AGE_SECONDS = Math.max(
  60,
  DISPATCH_LEASE_SECONDS - PUBLISH_ALLOWANCE_SECONDS,
);

/**
 * One executor function and one rule per job type, all from the same bundle. Each executor gets the
 * Data API, and what its type declares it needs: the SES sender, the valuation settings.
 */
export class Executors extends Construct {
  readonly functions = new Map<string, NodejsFunction>();
  readonly rules = new Map<string, events.Rule>();

  constructor(scope: Construct, id: string, props: ExecutorsProps) {
    super(scope, id);
    for (const jobType of props.jobTypes) {
      const name = pascalCase(jobType.type);
      const staleAfter = Duration.seconds(EXECUTOR_MAX_EVENT_AGE_SECONDS);
      const fn = createJobsFunction(this, name, props, {
        entry: 'executor',
        timeout: Duration.seconds(EXECUTOR_TIMEOUT_SECONDS),
        // The job table owns retries (backoff, max attempts); a Lambda retry would run the attempt twice.
        retryAttempts: 0,
        maxEventAge: staleAfter,
        onFailure: props.functionFailures,
        reservedConcurrency: props.reservedConcurrency?.(jobType),
        environment: {
          JOB_TYPE: jobType.type,
          // The same names the local runtime reads (shared/domain/settings.ts); only what the type needs.
          ...(jobType.needs.includes('email-sender')
            ? { [SETTING_NAMES.notificationFromAddress]: props.notificationFromAddress }
            : {}),
          ...(jobType.needs.includes('valuation-settings')
            ? { [SETTING_NAMES.priceUrl]: props.priceSourceUrl, ...props.valuationSettings }
            : {}),
          ...(jobType.needs.includes('job-retention') && props.jobRetentionDays !== undefined
            ? { [SETTING_NAMES.retentionDays]: String(props.jobRetentionDays) }
            : {}),
        },
      });
      if (jobType.needs.includes('email-sender')) this.grantSendEmail(fn, props);
      // Every executor wakes fetch-ready when its invocation runs out of time for another job (its slot is
      // refilled at once), and those whose jobs enqueue follow-ups after such a run (shared/aws/follow-ups.ts).
      props.bus.grantPutEventsTo(fn);
      const rule = new events.Rule(this, `${name}Rule`, {
        description: `Routes ${jobType.type} jobs to their executor`,
        eventBus: props.bus,
        eventPattern: {
          source: [JOB_EVENT_SOURCE],
          detailType: [JOB_EVENT_DETAIL_TYPE],
          detail: { jobType: [jobType.type] },
        },
        targets: [
          new targets.LambdaFunction(fn, {
            deadLetterQueue: props.deliveryFailures,
            retryAttempts: 10,
            maxEventAge: staleAfter,
          }),
        ],
      });
      this.functions.set(jobType.type, fn);
      this.rules.set(jobType.type, rule);
    }
  }

  /**
   * SES authorises a send on the sender's identity (the address itself or its domain) and, when the
   * send goes through a configuration set, on that set too: the named one, or, when none is named, any
   * set of the account in this Region, because an identity's default set applies without the sender
   * naming it and would otherwise refuse every send.
   */
  private grantSendEmail(fn: NodejsFunction, props: ExecutorsProps): void {
    const stack = Stack.of(this);
    const from = props.notificationFromAddress;
    const domain = from.split('@')[1] ?? from;
    const resources = [from, domain].map((identity) =>
      stack.formatArn({ service: 'ses', resource: 'identity', resourceName: identity }),
    );
    resources.push(
      stack.formatArn({
        service: 'ses',
        resource: 'configuration-set',
        resourceName: props.notificationConfigurationSet ?? '*',
      }),
    );
    fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['ses:SendEmail'], resources }));
  }
}
