import { Stack } from 'aws-cdk-lib';
import { NagSuppressions } from 'cdk-nag';
import { executorNeeds } from '../shared/job-types/executor-needs.js';
import type { JobsDatabase } from './database.js';
import type { JobFunctions } from './functions.js';

/**
 * The cdk-nag AwsSolutions findings this stack accepts, each on the construct it concerns, with its reason.
 * Anything not listed here fails `cdk synth` (the app applies AwsSolutionsChecks) and the nag test.
 */
export function acknowledgeNagFindings(parts: { functions: JobFunctions; database: JobsDatabase }): void {
  const { functions, database } = parts;
  for (const fn of functions.allFunctions) {
    NagSuppressions.addResourceSuppressions(fn, [
      {
        id: 'AwsSolutions-L1',
        reason:
          'Pinned to nodejs22.x on purpose: it is the runtime the code and its dependencies (middy 6, Powertools 2) are built and tested for (esbuild target node22). Lambda supports it; move to nodejs24.x together with the toolchain.',
      },
    ]);
    NagSuppressions.addResourceSuppressions(
      fn.role!,
      [
        {
          id: 'AwsSolutions-IAM5',
          reason:
            'X-Ray tracing (Tracing.ACTIVE): xray:PutTraceSegments and xray:PutTelemetryRecords do not support resource-level permissions, so their resource must be "*". Every other statement names a concrete resource.',
          appliesTo: ['Resource::*'],
        },
      ],
      true,
    );
  }
  for (const [type, fn] of functions.executors) {
    if (!executorNeeds(type).includes('email-sender')) continue;
    NagSuppressions.addResourceSuppressions(
      fn.role!,
      [
        {
          id: 'AwsSolutions-IAM5',
          reason:
            'ses:SendEmail is also authorised on the configuration set a send goes through; without -c notificationConfigurationSet the identity may have a default set whose name the stack does not know, so any set of this account and Region is allowed (the identity is still the named sender only).',
          appliesTo: [
            {
              regex:
                '/^Resource::arn:<AWS::Partition>:ses:<AWS::Region>:<AWS::AccountId>:configuration-set/\\*$/g',
            },
          ],
        },
      ],
      true,
    );
  }
  NagSuppressions.addResourceSuppressions(functions.functionFailures, [
    {
      id: 'AwsSolutions-SQS3',
      reason:
        "This queue IS a dead-letter queue: the on-failure destination of the executor and schedule functions' asynchronous invocations. cdk-nag only recognises DLQs referenced by a RedrivePolicy or DeadLetterConfig.",
    },
  ]);
  NagSuppressions.addResourceSuppressions(functions.deliveryFailures, [
    {
      id: 'AwsSolutions-SQS3',
      reason:
        'This queue IS a dead-letter queue: the DeadLetterConfig of the EventBridge rule targets (events that could not be delivered to a function). cdk-nag only recognises DLQs referenced by a RedrivePolicy or a Lambda DeadLetterConfig.',
    },
  ]);
  const frameworkRole = functions.migrations.provider.node
    .findChild('framework-onEvent')
    .node.findChild('ServiceRole');
  NagSuppressions.addResourceSuppressions(
    frameworkRole,
    [
      {
        id: 'AwsSolutions-IAM4',
        reason:
          'The CDK custom-resource Provider framework function (CDK-managed code) uses AWSLambdaBasicExecutionRole for its own logs; it only relays CloudFormation events to the migrate function.',
        appliesTo: ['Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole'],
      },
      {
        id: 'AwsSolutions-IAM5',
        reason:
          'The Provider framework may invoke any version of the migrate function ("<arn>:*"); the grant is still limited to that one function.',
        appliesTo: [{ regex: '/^Resource::<FunctionsMigrationsFunction[A-Za-z0-9]+\\.Arn>:\\*$/g' }],
      },
    ],
    true,
  );
  const endpointSecurityGroup = database.vpc.node.findChild('SecretsManager').node.findChild('SecurityGroup');
  NagSuppressions.addResourceSuppressions(endpointSecurityGroup, [
    {
      id: 'CdkNagValidationFailure',
      reason:
        "EC23 cannot resolve the ingress CIDR, an intrinsic (Fn::GetAtt Vpc.CidrBlock): the Secrets Manager endpoint accepts HTTPS from the VPC's own range only, never 0.0.0.0/0.",
    },
  ]);
  // The CDK LogRetention function (one per stack) sets the retention of the log group RDS creates for
  // the cluster's PostgreSQL log, which does not exist before the cluster does.
  for (const singleton of Stack.of(functions).node.children.filter((c) =>
    c.node.id.startsWith('LogRetention'),
  )) {
    NagSuppressions.addResourceSuppressions(
      singleton,
      [
        {
          id: 'AwsSolutions-IAM4',
          reason:
            'The CDK LogRetention function (CDK-managed code) uses AWSLambdaBasicExecutionRole for its own logs; it only sets the retention of the RDS PostgreSQL log group.',
          appliesTo: [
            'Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole',
          ],
        },
        {
          id: 'AwsSolutions-IAM5',
          reason:
            'The CDK LogRetention function is granted logs:PutRetentionPolicy/DeleteRetentionPolicy on "*" by CDK; the log group it changes is created by RDS, so no resource exists to scope it to at synth time.',
          appliesTo: ['Resource::*'],
        },
      ],
      true,
    );
  }
}
