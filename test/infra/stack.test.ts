import { Match, Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, test } from 'vitest';
import { pascalCase } from '../../infra/functions.js';
import { METRICS_NAMESPACE, SERVICE_NAME } from '../../infra/jobs-stack.js';
import { createJobTypeRegistry } from '../../shared/job-types/index.js';
import { toEventBridgeExpression } from '../../shared/schedules/cron.js';
import { schedules } from '../../shared/schedules/definitions.js';
import { synthStack } from './support.js';

type Resources = Record<string, { Type: string; Properties?: Record<string, unknown> }>;

let template: Template;
let resources: Resources;
/** A dev-style stack with every setting changed, synthesised once for the configuration tests. */
let configured: Template;
const jobTypes = createJobTypeRegistry().list();

beforeAll(() => {
  template = Template.fromStack(synthStack());
  resources = template.toJSON().Resources as Resources;
  configured = Template.fromStack(
    synthStack({
      deletionProtection: false,
      minCapacity: 0,
      maxCapacity: 2,
      reserveConcurrency: true,
      executorReservedConcurrency: 0,
      fetchReadyReservedConcurrency: 3,
      alarmEmail: 'ops@example.com',
      thresholds: { queueDepth: 50, oldestReadyAgeSeconds: 120 },
    }),
  );
});

/** The functions written for this stack (not CDK's Provider framework or LogRetention functions). */
function stackFunctions() {
  return Object.entries(resources).filter(
    ([id, r]) => r.Type === 'AWS::Lambda::Function' && id.startsWith('Functions') && !id.includes('Provider'),
  );
}

/** The logical id of the Lambda function whose JOB_TYPE is `type` (or the function with `idPart`). */
function functionId(match: (id: string, props: Record<string, unknown>) => boolean): string {
  const found = Object.entries(resources).filter(
    ([id, r]) => r.Type === 'AWS::Lambda::Function' && match(id, r.Properties ?? {}),
  );
  expect(found).toHaveLength(1);
  return found[0]![0];
}
const executorId = (type: string) =>
  functionId(
    (_, p) =>
      (p.Environment as { Variables?: Record<string, string> } | undefined)?.Variables?.JOB_TYPE === type,
  );
const fnId = (part: string) =>
  functionId((id) => id.startsWith(`Functions${part}`) && !id.includes('Provider'));

describe('schedules', () => {
  test('fetch-ready runs every minute, without retries of a stale tick', () => {
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(1 minute)',
      State: 'ENABLED',
      Targets: [
        Match.objectLike({
          Arn: { 'Fn::GetAtt': [fnId('FetchReady'), 'Arn'] },
          RetryPolicy: { MaximumRetryAttempts: 0, MaximumEventAgeInSeconds: 60 },
        }),
      ],
    });
    template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
      FunctionName: { Ref: fnId('FetchReady') },
      MaximumRetryAttempts: 0,
      MaximumEventAgeInSeconds: 60,
    });
  });

  test('fetch-ready also runs at once on a jobs.enqueued nudge on the jobs bus', () => {
    template.hasResourceProperties('AWS::Events::Rule', {
      EventBusName: { Ref: Match.stringLikeRegexp('^JobsBus') },
      EventPattern: { source: ['lana.jobs'], 'detail-type': ['jobs.enqueued'] },
      Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [fnId('FetchReady'), 'Arn'] } })],
    });
  });

  test('interest accrual at midnight UTC, and one rule per recurring schedule from the shared definitions', () => {
    const ruleFor = (name: string) =>
      Object.values(resources).filter(
        (r) =>
          r.Type === 'AWS::Events::Rule' &&
          JSON.stringify(r.Properties?.Targets ?? '').includes(`\\"schedule\\":\\"${name}\\"`),
      );
    for (const s of schedules) {
      const rules = ruleFor(s.name);
      expect(rules, s.name).toHaveLength(1);
      expect(rules[0]!.Properties!.ScheduleExpression).toBe(toEventBridgeExpression(s.expression));
    }
    const [midnight] = ruleFor('interest-accrual-daily');
    expect(midnight!.Properties!.ScheduleExpression).toBe('cron(0 0 * * ? *)');
    const [target] = midnight!.Properties!.Targets as Record<string, unknown>[];
    expect(target).toMatchObject({
      Arn: { 'Fn::GetAtt': [fnId('Schedule'), 'Arn'] },
      // The tick's scheduled time is the idempotency key's time.
      InputTransformer: {
        InputPathsMap: { time: '$.time' },
        InputTemplate: '{"schedule":"interest-accrual-daily","time":<time>}',
      },
      DeadLetterConfig: { Arn: { 'Fn::GetAtt': [expect.stringMatching(/DeliveryFailures/), 'Arn'] } },
    });
    template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
      FunctionName: { Ref: fnId('Schedule') },
      MaximumRetryAttempts: 2,
      DestinationConfig: { OnFailure: { Destination: Match.anyValue() } },
    });
  });
});

describe('one rule and one executor per job type', () => {
  test('every registered type, and nothing else', () => {
    const executors = Object.values(resources).filter(
      (r) =>
        r.Type === 'AWS::Lambda::Function' &&
        (r.Properties?.Environment as { Variables?: Record<string, string> } | undefined)?.Variables
          ?.JOB_TYPE !== undefined,
    );
    expect(executors).toHaveLength(jobTypes.length);
    expect(jobTypes.map((t) => t.type)).toContain('interest-accrual');
  });

  test.each(jobTypes.map((t) => [t.type] as const))('%s', (type) => {
    const id = executorId(type);
    expect(id).toContain(`FunctionsExecutors${pascalCase(type)}`);
    template.hasResourceProperties('AWS::Lambda::Function', {
      Runtime: 'nodejs22.x',
      Handler: 'index.handler',
      // Lambda's longest: an invocation takes its type's next job while a whole attempt fits.
      Timeout: 900,
      TracingConfig: { Mode: 'Active' },
      // Reservations are opt-in (small account quotas): none by default.
      ReservedConcurrentExecutions: Match.absent(),
      // The lending settings under the names the local runtime reads too (shared/domain/settings.ts).
      Environment: {
        Variables: Match.objectLike({
          JOB_TYPE: type,
          // Only what the type declares (shared/job-types/executor-needs.ts).
          LANA_PRICE_URL: type === 'sync' ? Match.stringLikeRegexp('^https://') : Match.absent(),
          LANA_NOTIFICATION_FROM_ADDRESS:
            type === 'notification' ? Match.stringLikeRegexp('@') : Match.absent(),
        }),
      },
    });
    template.hasResourceProperties('AWS::Events::Rule', {
      EventBusName: { Ref: Match.stringLikeRegexp('^JobsBus') },
      EventPattern: { source: ['lana.jobs'], 'detail-type': ['job.ready'], detail: { jobType: [type] } },
      Targets: [
        Match.objectLike({
          Arn: { 'Fn::GetAtt': [id, 'Arn'] },
          DeadLetterConfig: { Arn: { 'Fn::GetAtt': [Match.stringLikeRegexp('DeliveryFailures'), 'Arn'] } },
          // Inside the claim's 90 s dispatch lease (an event older than that would be refused at start).
          RetryPolicy: { MaximumRetryAttempts: 10, MaximumEventAgeInSeconds: 60 },
        }),
      ],
    });
    // The table owns retries: Lambda never re-runs an attempt; what fails inside Lambda goes to the DLQ.
    template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
      FunctionName: { Ref: id },
      MaximumRetryAttempts: 0,
      MaximumEventAgeInSeconds: 60,
      DestinationConfig: {
        OnFailure: { Destination: { 'Fn::GetAtt': [Match.stringLikeRegexp('FunctionFailures'), 'Arn'] } },
      },
    });
  });
});

test('every function gets the Data API, bus and Powertools settings', () => {
  const functions = stackFunctions();
  expect(functions).toHaveLength(jobTypes.length + 3);
  for (const [id, fn] of functions) {
    const vars = (fn.Properties!.Environment as { Variables: Record<string, unknown> }).Variables;
    expect(Object.keys(vars), id).toEqual(
      expect.arrayContaining([
        'DATA_API_RESOURCE_ARN',
        'DATA_API_SECRET_ARN',
        'DATA_API_DATABASE',
        'JOBS_BUS_NAME',
        'POWERTOOLS_SERVICE_NAME',
        'POWERTOOLS_METRICS_NAMESPACE',
      ]),
    );
    expect(vars.POWERTOOLS_SERVICE_NAME).toBe(SERVICE_NAME);
    expect(vars.POWERTOOLS_METRICS_NAMESPACE).toBe(METRICS_NAMESPACE);
    expect(vars.DATA_API_DATABASE).toBe('lana');
    // A job type without a limit of its own is capped on AWS (the stack's defaultTypeConcurrency).
    expect(vars.LANA_DEFAULT_TYPE_CONCURRENCY).toBe('50');
    expect(fn.Properties!.Runtime).toBe('nodejs22.x');
    expect(fn.Properties!.VpcConfig, `${id} needs no VPC: the Data API is HTTPS`).toBeUndefined();
  }
});

describe('database', () => {
  test('Aurora PostgreSQL Serverless v2, Data API, encrypted, backed up, protected by default', () => {
    template.hasResourceProperties('AWS::RDS::DBCluster', {
      Engine: 'aurora-postgresql',
      EnableHttpEndpoint: true,
      StorageEncrypted: true,
      DeletionProtection: true,
      BackupRetentionPeriod: 7,
      DatabaseName: 'lana',
      ServerlessV2ScalingConfiguration: { MinCapacity: 0.5, MaxCapacity: 4 },
    });
    template.hasResource('AWS::RDS::DBCluster', { DeletionPolicy: 'Snapshot' });
    template.hasResourceProperties('AWS::RDS::DBInstance', { DBInstanceClass: 'db.serverless' });
    template.hasResourceProperties('AWS::SecretsManager::RotationSchedule', {
      RotationRules: { ScheduleExpression: 'rate(30 days)' },
    });
  });

  test('a dev stack can drop deletion protection and resize', () => {
    const dev = configured;
    dev.hasResourceProperties('AWS::RDS::DBCluster', {
      DeletionProtection: false,
      ServerlessV2ScalingConfiguration: { MinCapacity: 0, MaxCapacity: 2 },
    });
    dev.hasResource('AWS::RDS::DBCluster', { DeletionPolicy: 'Delete' });
  });

  test('migrations are applied by a custom resource after the writer exists, with the SQL in the bundle', () => {
    const [migrations] = Object.entries(resources).filter(([, r]) => r.Type === 'Custom::LanaMigrations');
    expect(migrations![1].Properties!.MigrationsHash).toMatch(/^[0-9a-f]{64}$/);
    const dependsOn = (template.toJSON().Resources[migrations![0]] as { DependsOn: string[] }).DependsOn;
    expect(dependsOn.some((d) => d.startsWith('DatabaseClusterwriter'))).toBe(true);
    template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: Match.objectLike({ LANA_MIGRATIONS_DIR: '/var/task/migrations' }) },
    });
  });
});

describe('least privilege', () => {
  const statements = () =>
    Object.entries(resources)
      .filter(([, r]) => r.Type === 'AWS::IAM::Policy')
      .flatMap(([id, r]) =>
        (r.Properties!.PolicyDocument as { Statement: Record<string, unknown>[] }).Statement.map((s) => ({
          policy: id,
          actions: ([] as string[]).concat(s.Action as string | string[]),
          resource: s.Resource,
        })),
      );

  test('only X-Ray has a "*" resource; everything else names a concrete resource', () => {
    for (const s of statements()) {
      // CDK's LogRetention function (acknowledged in infra/nag.ts) sets the RDS log group's retention.
      if (s.policy.startsWith('LogRetention')) continue;
      if (s.resource === '*')
        expect(
          s.actions.every((a) => a.startsWith('xray:')),
          s.policy,
        ).toBe(true);
      else expect(JSON.stringify(s.resource), s.policy).not.toMatch(/"\*"/);
    }
  });

  test('Data API access on the cluster for every function; the master secret for migrations only', () => {
    const dataApi = statements().filter((s) => s.actions.includes('rds-data:ExecuteStatement'));
    expect(dataApi).toHaveLength(jobTypes.length + 3);
    for (const s of dataApi) {
      expect(JSON.stringify(s.resource)).toContain(':cluster:');
      expect(s.actions.every((a) => a.startsWith('rds-data:'))).toBe(true);
    }
    const secretReaders = (secret: RegExp) =>
      statements()
        .filter(
          (s) =>
            s.actions.includes('secretsmanager:GetSecretValue') &&
            secret.test(JSON.stringify(s.resource)) &&
            s.policy.startsWith('Functions'),
        )
        .map((s) => s.policy);
    // Every function reads the application user's secret (migrations, to create the user with it) ...
    expect(secretReaders(/DatabaseAppSecretAttachment/)).toHaveLength(jobTypes.length + 3);
    // ... and only migrations reads the master's.
    expect(secretReaders(/DatabaseClusterSecretAttachment/)).toEqual([
      expect.stringMatching(/^FunctionsMigrationsFunctionRole/),
    ]);
    for (const [id, fn] of stackFunctions()) {
      const secretArn = (fn.Properties!.Environment as { Variables: Record<string, unknown> }).Variables
        .DATA_API_SECRET_ARN;
      expect(JSON.stringify(secretArn), id).toMatch(
        id.startsWith('FunctionsMigrations')
          ? /DatabaseClusterSecretAttachment/
          : /DatabaseAppSecretAttachment/,
      );
    }
  });

  test('jobRetentionDays reaches the maintenance executor only, under the name the code reads; unset, the code default applies', () => {
    const executors = (template: Template) =>
      Object.values(template.findResources('AWS::Lambda::Function')).filter(
        (r) => (r.Properties?.Environment?.Variables as Record<string, string> | undefined)?.JOB_TYPE,
      );
    const withRetention = Template.fromStack(synthStack({ jobRetentionDays: 90 }));
    for (const fn of executors(withRetention))
      expect(fn.Properties.Environment.Variables.LANA_JOB_RETENTION_DAYS).toBe(
        fn.Properties.Environment.Variables.JOB_TYPE === 'maintenance' ? '90' : undefined,
      );
    for (const fn of executors(template))
      expect(fn.Properties.Environment.Variables.LANA_JOB_RETENTION_DAYS).toBeUndefined();
  });

  test('the follow-ups a job type declares are registered types, and match what its executor enqueues', () => {
    const names = new Set(jobTypes.map((t) => t.type));
    const declared = Object.fromEntries(
      jobTypes.filter((t) => t.enqueues.length).map((t) => [t.type, t.enqueues]),
    );
    expect(declared).toEqual({ sync: ['notification'], 'payment-reminders': ['notification'] });
    for (const follow of Object.values(declared).flat()) expect(names.has(follow)).toBe(true);
  });

  test('PutEvents only on the jobs bus, for fetch-ready, schedule and the executors; SES only for notifications', () => {
    const putEvents = statements().filter((s) => s.actions.includes('events:PutEvents'));
    expect(putEvents.map((s) => s.policy.replace(/Role.*$/, 'Role')).sort()).toEqual(
      [
        ...jobTypes.map((t) => `FunctionsExecutors${pascalCase(t.type)}Role`),
        'FunctionsFetchReadyFunctionRole',
        'FunctionsSchedulesFunctionRole',
      ].sort(),
    );
    for (const s of putEvents)
      expect(s.resource).toEqual({ 'Fn::GetAtt': [expect.stringMatching(/^JobsBus/), 'Arn'] });
    const ses = statements().filter((s) => s.actions.some((a) => a.startsWith('ses:')));
    expect(ses).toHaveLength(1);
    expect(ses[0]!.policy).toMatch(/^FunctionsExecutorsNotificationRole/);
    expect(JSON.stringify(ses[0]!.resource)).toContain(':identity/');
  });

  test('no AWS managed policies on the functions’ roles', () => {
    const roles = Object.entries(resources).filter(
      ([id, r]) => r.Type === 'AWS::IAM::Role' && id.startsWith('Functions') && !id.includes('Provider'),
    );
    expect(roles.length).toBe(jobTypes.length + 3);
    for (const [, r] of roles) expect(r.Properties!.ManagedPolicyArns).toBeUndefined();
  });
});

describe('alarms', () => {
  const alarm = (idPart: string) => {
    const found = Object.entries(resources).filter(
      ([id, r]) => r.Type === 'AWS::CloudWatch::Alarm' && id.includes(idPart),
    );
    expect(found, idPart).toHaveLength(1);
    return found[0]![1].Properties!;
  };

  test('failure rate: metric math over failures and successes, guarded for no traffic', () => {
    const p = alarm('FailureRate');
    expect(p).toMatchObject({
      Threshold: 10,
      ComparisonOperator: 'GreaterThanThreshold',
      TreatMissingData: 'notBreaching',
    });
    const metrics = p.Metrics as {
      Id: string;
      Expression?: string;
      MetricStat?: { Metric: Record<string, unknown> };
    }[];
    // FILL: a period with failures and no successes has no `s` datapoint, and must still alarm.
    expect(metrics.find((m) => m.Expression)!.Expression).toBe(
      'IF((FILL(s, 0) + FILL(f, 0)) >= 5, 100 * FILL(f, 0) / (FILL(s, 0) + FILL(f, 0)), 0)',
    );
    for (const [id, name] of [
      ['s', 'JobSucceeded'],
      ['f', 'JobFailed'],
    ]) {
      expect(metrics.find((m) => m.Id === id)!.MetricStat!.Metric).toEqual({
        Namespace: METRICS_NAMESPACE,
        MetricName: name,
        // The exact dimension set the EMF metrics carry.
        Dimensions: [{ Name: 'service', Value: SERVICE_NAME }],
      });
    }
  });

  test('long-running jobs, queue backup, fetch-ready errors and dead-letter queues', () => {
    // While an attempt still runs past its type's timeout, not only after its lease expired.
    expect(alarm('LongRunningJobs')).toMatchObject({
      MetricName: 'JobsRunningPastTimeout',
      Statistic: 'Maximum',
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      Dimensions: [{ Name: 'service', Value: SERVICE_NAME }],
    });
    expect(alarm('LeasesExpired')).toMatchObject({
      MetricName: 'LeaseExpired',
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      Dimensions: [{ Name: 'service', Value: SERVICE_NAME }],
    });
    // Claims no executor began: events are not arriving for some type.
    expect(alarm('UndeliveredClaims')).toMatchObject({
      MetricName: 'ClaimsHandedBack',
      Statistic: 'Sum',
      Threshold: 3,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      Dimensions: [{ Name: 'service', Value: SERVICE_NAME }],
    });
    expect(alarm('QueueDepth')).toMatchObject({
      MetricName: 'QueueDepth',
      Threshold: 1000,
      Statistic: 'Maximum',
    });
    expect(alarm('OldestReadyAge')).toMatchObject({
      MetricName: 'OldestReadyAgeSeconds',
      Threshold: 600,
      TreatMissingData: 'breaching',
    });
    expect(alarm('FetchReadyErrors')).toMatchObject({
      Namespace: 'AWS/Lambda',
      MetricName: 'Errors',
      Threshold: 3,
    });
    for (const q of ['FunctionFailuresNotEmpty', 'DeliveryFailuresNotEmpty']) {
      expect(alarm(q)).toMatchObject({
        Namespace: 'AWS/SQS',
        MetricName: 'ApproximateNumberOfMessagesVisible',
        Threshold: 1,
      });
    }
  });

  test("each executor's async queue: dropped events, event age past half the lease, throttles", () => {
    for (const t of jobTypes) {
      const fn = { Ref: executorId(t.type) };
      const name = pascalCase(t.type);
      expect(alarm(`${name}AsyncEventsDropped`)).toMatchObject({
        Namespace: 'AWS/Lambda',
        MetricName: 'AsyncEventsDropped',
        Dimensions: [{ Name: 'FunctionName', Value: fn }],
        Statistic: 'Sum',
        Threshold: 1,
      });
      expect(alarm(`${name}AsyncEventAge`)).toMatchObject({
        MetricName: 'AsyncEventAge',
        Dimensions: [{ Name: 'FunctionName', Value: fn }],
        Statistic: 'Maximum',
        Threshold: 30_000, // half of the 60 s an event may wait
      });
      expect(alarm(`${name}Throttles`)).toMatchObject({
        MetricName: 'Throttles',
        Dimensions: [{ Name: 'FunctionName', Value: fn }],
        Threshold: 1,
      });
    }
  });

  test("every rule that invokes a function alarms on the rule's FailedInvocations", () => {
    const rules = Object.entries(resources).filter(([, r]) => r.Type === 'AWS::Events::Rule');
    const failed = Object.values(resources).filter(
      (r) => r.Type === 'AWS::CloudWatch::Alarm' && r.Properties!.MetricName === 'FailedInvocations',
    );
    expect(failed).toHaveLength(rules.length);
    const dimensions = (a: (typeof failed)[number]) =>
      Object.fromEntries(
        (a.Properties!.Dimensions as { Name: string; Value: unknown }[]).map((d) => [
          d.Name,
          JSON.stringify(d.Value),
        ]),
      );
    for (const [ruleId, rule] of rules) {
      // A rule on a custom bus is named by `Fn::Select` over its Ref; on the default bus by its Ref.
      const mine = failed.filter((a) => dimensions(a).RuleName?.includes(`"${ruleId}"`));
      expect(mine, ruleId).toHaveLength(1);
      expect(mine[0]!.Properties).toMatchObject({ Namespace: 'AWS/Events', Threshold: 1 });
      // Rules on the jobs bus report with its name too; scheduled rules (default bus) without.
      if (rule.Properties!.EventBusName) expect(dimensions(mine[0]!).EventBusName, ruleId).toMatch(/JobsBus/);
      else expect(dimensions(mine[0]!).EventBusName, ruleId).toBeUndefined();
    }
  });

  test('the dashboard shows outcomes and execution time by job type beside the service-level series', () => {
    const [dashboard] = Object.values(resources).filter((r) => r.Type === 'AWS::CloudWatch::Dashboard');
    const body = JSON.stringify(dashboard!.Properties!.DashboardBody);
    expect(body).toContain('by jobType');
    for (const m of ['JobSucceeded', 'JobFailed', 'JobRetried', 'LeaseExpired', 'ExecutionTime'])
      expect(body).toContain(m);
    expect(body).toContain('AsyncEventAge');
    // The per-type query reads every stack function's log group.
    for (const [id] of stackFunctions()) expect(body).toContain(id.replace(/[0-9A-F]{8}$/, ''));
  });

  test('every alarm notifies the SNS topic; thresholds and an e-mail are configurable', () => {
    for (const r of Object.values(resources).filter((r) => r.Type === 'AWS::CloudWatch::Alarm')) {
      expect(r.Properties!.AlarmActions).toEqual([{ Ref: expect.stringMatching(/AlarmTopic/) }]);
    }
    const custom = configured;
    custom.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'ops@example.com',
    });
    custom.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'QueueDepth', Threshold: 50 });
    custom.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'OldestReadyAgeSeconds',
      Threshold: 120,
    });
    template.resourceCountIs('AWS::SNS::Subscription', 0);
    template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
  });
});

test('reserved concurrency is opt-in; when on, configurable per function, 0 meaning none', () => {
  for (const [id, r] of stackFunctions())
    expect(r.Properties!.ReservedConcurrentExecutions, id).toBeUndefined();
  const t = configured;
  const fns = Object.entries(t.toJSON().Resources as Resources).filter(
    ([, r]) => r.Type === 'AWS::Lambda::Function',
  );
  const declared = new Map(jobTypes.map((t) => [t.type, t.concurrency]));
  for (const [id, r] of fns) {
    const type = (r.Properties as { Environment?: { Variables?: { JOB_TYPE?: string } } }).Environment
      ?.Variables?.JOB_TYPE;
    if (id.startsWith('FunctionsFetchReady')) expect(r.Properties!.ReservedConcurrentExecutions).toBe(3);
    // An executor reserves its type's declared concurrency; 0 turns off the default for the others.
    else if (type && declared.get(type) !== undefined)
      expect(r.Properties!.ReservedConcurrentExecutions, id).toBe(declared.get(type));
    else expect(r.Properties!.ReservedConcurrentExecutions, id).toBeUndefined();
  }
});

test('outputs: cluster ARN, secret ARN, database name, bus name', () => {
  const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
  expect(Object.keys(outputs)).toEqual(
    expect.arrayContaining(['ClusterArn', 'SecretArn', 'DatabaseName', 'BusName', 'FetchReadyFunctionName']),
  );
  expect(outputs.DatabaseName!.Value).toBe('lana');
  expect(outputs.BusName!.Value).toEqual({ Ref: expect.stringMatching(/^JobsBus/) });
});
