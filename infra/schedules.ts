import { Duration } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import type { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { toEventBridgeExpression } from '../shared/schedules/cron.js';
import type { RecurringSchedule } from '../shared/schedules/definitions.js';
import { createJobsFunction, type FunctionEnvironment, pascalCase } from './lambda-function.js';

export interface SchedulesProps extends FunctionEnvironment {
  schedules: readonly RecurringSchedule[];
  functionFailures: sqs.IQueue;
  deliveryFailures: sqs.IQueue;
}

/**
 * The recurring schedules (shared/schedules/definitions.ts): one rule each, all invoking the schedule
 * function with the schedule's name and the tick's scheduled time. Enqueueing is idempotent per tick, so
 * retries are safe.
 */
export class Schedules extends Construct {
  readonly fn: NodejsFunction;
  readonly rules = new Map<string, events.Rule>();

  constructor(scope: Construct, id: string, props: SchedulesProps) {
    super(scope, id);
    this.fn = createJobsFunction(this, 'Function', props, {
      entry: 'schedule',
      timeout: Duration.seconds(60),
      retryAttempts: 2,
      maxEventAge: Duration.hours(1),
      onFailure: props.functionFailures,
    });
    props.bus.grantPutEventsTo(this.fn);
    for (const s of props.schedules) {
      const rule = new events.Rule(this, pascalCase(s.name), {
        description: s.description,
        schedule: events.Schedule.expression(toEventBridgeExpression(s.expression)),
        targets: [
          new targets.LambdaFunction(this.fn, {
            event: events.RuleTargetInput.fromObject({ schedule: s.name, time: events.EventField.time }),
            deadLetterQueue: props.deliveryFailures,
            retryAttempts: 10,
            maxEventAge: Duration.hours(2),
          }),
        ],
      });
      this.rules.set(s.name, rule);
    }
  }
}
