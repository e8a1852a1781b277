import { App, Aspects, CfnResource, Stack } from 'aws-cdk-lib';
import { Annotations, Match } from 'aws-cdk-lib/assertions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { AwsSolutionsChecks } from 'cdk-nag';
import { expect, test } from 'vitest';
import { JobsStack } from '../../infra/jobs-stack.js';
import { cdkJsonContext, REQUIRED_SETTINGS } from './support.js';

function checkedStack(): Stack {
  const app = new App({ context: { ...cdkJsonContext(), 'aws:cdk:bundling-stacks': [] } });
  const stack = new JobsStack(app, 'Nag', REQUIRED_SETTINGS);
  Aspects.of(app).add(new AwsSolutionsChecks({ verbose: true }));
  return stack;
}

const nagFinding = Match.stringLikeRegexp('(AwsSolutions|CdkNagValidationFailure)');

test('the stack has no unacknowledged AwsSolutions finding, and each acknowledgement has its reason', () => {
  const stack = checkedStack();
  const annotations = Annotations.fromStack(stack);
  expect(annotations.findError('*', nagFinding)).toEqual([]);
  expect(annotations.findWarning('*', nagFinding)).toEqual([]);

  const acknowledged = stack.node
    .findAll()
    .filter((c): c is CfnResource => c instanceof CfnResource)
    .flatMap(
      (r) =>
        (r.getMetadata('cdk_nag') as { rules_to_suppress: { id: string; reason: string }[] } | undefined)
          ?.rules_to_suppress ?? [],
    );
  expect(new Set(acknowledged.map((a) => a.id))).toEqual(
    new Set([
      'AwsSolutions-L1',
      'AwsSolutions-IAM4',
      'AwsSolutions-IAM5',
      'AwsSolutions-SQS3',
      'CdkNagValidationFailure',
    ]),
  );
  for (const a of acknowledged) expect(a.reason.length, a.id).toBeGreaterThan(60);
});

test('the checks really run: an unacknowledged resource is reported', () => {
  const app = new App();
  const stack = new Stack(app, 'Plain');
  new sqs.Queue(stack, 'Unchecked');
  Aspects.of(app).add(new AwsSolutionsChecks());
  const errors = Annotations.fromStack(stack).findError('*', Match.stringLikeRegexp('AwsSolutions-SQS[34]'));
  expect(errors.map((e) => e.id)).toEqual(['/Plain/Unchecked/Resource', '/Plain/Unchecked/Resource']);
});
