import { Duration } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import type { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import { Construct } from 'constructs';
import { JOB_EVENT_SOURCE } from '../shared/aws/eventbridge-publisher.js';
import { JOBS_ENQUEUED_DETAIL_TYPE } from '../shared/aws/waker.js';
import { createJobsFunction, type FunctionEnvironment } from './lambda-function.js';

export interface FetchReadyProps extends FunctionEnvironment {
  /** undefined or 0: no reservation. */
  reservedConcurrency?: number;
  claimBatchSize: number;
  maxClaimsPerRun?: number;
}

/**
 * fetch-ready: claims due jobs and publishes one `job.ready` event per job to the jobs bus. It runs every
 * minute, and at once on a `jobs.enqueued` nudge. A missed tick is replaced by the next one, so neither
 * Lambda nor EventBridge retries it, and a throttled tick expires within a minute instead of being
 * replayed late.
 */
export class FetchReady extends Construct {
  readonly fn: NodejsFunction;
  readonly everyMinute: events.Rule;
  readonly onEnqueue: events.Rule;

  constructor(scope: Construct, id: string, props: FetchReadyProps) {
    super(scope, id);
    this.fn = createJobsFunction(this, 'Function', props, {
      entry: 'fetch-ready',
      timeout: Duration.seconds(90),
      retryAttempts: 0,
      maxEventAge: Duration.seconds(60),
      reservedConcurrency: props.reservedConcurrency,
      environment: {
        CLAIM_BATCH_SIZE: String(props.claimBatchSize),
        ...(props.maxClaimsPerRun === undefined ? {} : { MAX_CLAIMS_PER_RUN: String(props.maxClaimsPerRun) }),
      },
    });
    props.bus.grantPutEventsTo(this.fn);
    const target = () =>
      new targets.LambdaFunction(this.fn, { retryAttempts: 0, maxEventAge: Duration.seconds(60) });
    this.everyMinute = new events.Rule(this, 'EveryMinute', {
      description: 'Claims due jobs and fans them out to the executors',
      schedule: events.Schedule.expression('rate(1 minute)'),
      targets: [target()],
    });
    this.onEnqueue = new events.Rule(this, 'OnEnqueue', {
      description: 'Runs fetch-ready at once when new jobs are due',
      eventBus: props.bus,
      eventPattern: { source: [JOB_EVENT_SOURCE], detailType: [JOBS_ENQUEUED_DETAIL_TYPE] },
      targets: [target()],
    });
  }
}
