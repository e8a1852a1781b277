import { readFileSync } from 'node:fs';
import path from 'node:path';
import { App, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as events from 'aws-cdk-lib/aws-events';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { CURRENTLY_RECOMMENDED_FLAGS } from 'aws-cdk-lib/cx-api';
import { beforeAll, describe, expect, test } from 'vitest';
import { PROJECT_ROOT } from '../../infra/bundling.js';
import { JobsDatabase } from '../../infra/database.js';
import { Executors } from '../../infra/executors.js';
import { stackPropsFromContext } from '../../infra/settings.js';
import { lendingSettingsFromEnv } from '../../shared/domain/settings.js';
import { EXECUTOR_NEEDS } from '../../shared/job-types/executor-needs.js';
import { createJobTypeRegistry } from '../../shared/job-types/index.js';
import { cdkJsonContext, REQUIRED_SETTINGS, synthStack } from './support.js';

type Resource = {
  Type: string;
  Properties?: Record<string, unknown>;
  DependsOn?: string[];
};
let template: Template;
let resources: Record<string, Resource>;
const jobTypes = createJobTypeRegistry().list();

beforeAll(() => {
  template = Template.fromStack(synthStack());
  resources = template.toJSON().Resources as Record<string, Resource>;
});

const ofType = (type: string) => Object.entries(resources).filter(([, r]) => r.Type === type);

describe('deploy order', () => {
  test('every function but migrations, and every rule, waits for the migrations resource', () => {
    const [[migrationsId]] = ofType('Custom::LanaMigrations') as [[string, Resource]];
    const waiting = [...ofType('AWS::Lambda::Function'), ...ofType('AWS::Events::Rule')].filter(
      ([id]) => id.startsWith('Functions') && !id.startsWith('FunctionsMigrations'),
    );
    // fetch-ready, the executors, the schedule function; and their rules.
    expect(waiting.length).toBeGreaterThanOrEqual(2 * (jobTypes.length + 2));
    for (const [id, r] of waiting) expect(r.DependsOn ?? [], id).toContain(migrationsId);
    // The migrations themselves wait for the writer instance.
    expect(resources[migrationsId]!.DependsOn!.some((d) => d.startsWith('DatabaseClusterwriter'))).toBe(true);
  });

  test('the expand-only rule is written where migrations live', () => {
    const readme = readFileSync(path.join(PROJECT_ROOT, 'shared/db/migrations/README.md'), 'utf8');
    expect(readme).toMatch(/expand-only/i);
  });
});

describe('settings that must be given', () => {
  const context = (values: Record<string, string>) => (key: string) => values[key];

  test('synth fails naming the missing context key', () => {
    expect(() =>
      stackPropsFromContext(context({ priceSourceUrl: REQUIRED_SETTINGS.priceSourceUrl })),
    ).toThrow(/missing context key "notificationFromAddress"/);
    expect(() =>
      stackPropsFromContext(context({ notificationFromAddress: REQUIRED_SETTINGS.notificationFromAddress })),
    ).toThrow(/missing context key "priceSourceUrl"/);
    expect(() => synthStack({ notificationFromAddress: '' })).toThrow(/notificationFromAddress/);
  });

  test('an example.com sender, a malformed address and a plain-http price URL are refused', () => {
    for (const sender of ['no-reply@example.com', 'ops@mail.example.org', 'x@lana.test', 'not-an-address'])
      expect(() => synthStack({ notificationFromAddress: sender }), sender).toThrow(
        /notificationFromAddress/,
      );
    expect(() => synthStack({ priceSourceUrl: 'http://prices.lana-bank.io/btc' })).toThrow(/https/);
  });

  test('valid settings pass through to the executors that need them, and to no other', () => {
    const props = stackPropsFromContext(context({ ...REQUIRED_SETTINGS, reserveConcurrency: 'true' }));
    expect(props).toMatchObject({ ...REQUIRED_SETTINGS, reserveConcurrency: true });
    const executors = ofType('AWS::Lambda::Function').filter(([id]) => id.startsWith('FunctionsExecutors'));
    expect(executors).toHaveLength(jobTypes.length);
    for (const [, fn] of executors) {
      const variables = (fn.Properties!.Environment as { Variables: Record<string, unknown> }).Variables;
      const needs = EXECUTOR_NEEDS[variables.JOB_TYPE as keyof typeof EXECUTOR_NEEDS];
      expect(variables.LANA_NOTIFICATION_FROM_ADDRESS, String(variables.JOB_TYPE)).toBe(
        needs.includes('email-sender') ? REQUIRED_SETTINGS.notificationFromAddress : undefined,
      );
      expect(variables.LANA_PRICE_URL, String(variables.JOB_TYPE)).toBe(
        needs.includes('valuation-settings') ? REQUIRED_SETTINGS.priceSourceUrl : undefined,
      );
    }
  });

  test('SES permission covers configuration sets: the named one, else any (an identity default set)', () => {
    const ses = (t: Template) =>
      Object.values(t.findResources('AWS::IAM::Policy'))
        .flatMap((p) => p.Properties.PolicyDocument.Statement as { Action: unknown; Resource: unknown }[])
        .filter((s) => JSON.stringify(s.Action).includes('ses:SendEmail'));
    expect(JSON.stringify(ses(template))).toContain(':configuration-set/*');
    const withSet = ses(
      Template.fromStack(synthStack({ notificationConfigurationSet: 'lana-notifications' })),
    );
    expect(withSet).toHaveLength(1);
    const arns = JSON.stringify(withSet[0]!.Resource);
    expect(arns).toContain(':identity/no-reply@notifications.lana-bank.io');
    expect(arns).toContain(':identity/notifications.lana-bank.io');
    expect(arns).toContain(':configuration-set/lana-notifications');
    expect(arns).not.toContain(':configuration-set/*');
  });
});

describe('valuation settings', () => {
  const context = (values: Record<string, string>) => (key: string) => values[key];
  const VALUATION_VARIABLES = [
    'LANA_PRICE_URLS_EXTRA',
    'LANA_PRICE_MAX_JUMP',
    'LANA_PRICE_MAX_AGE_SECONDS',
    'LANA_COLLATERAL_UPGRADE_BUFFER',
  ];
  /** Each executor's variables, by the job type it runs (its JOB_TYPE). */
  const executorVariables = (t: Template) =>
    new Map(
      Object.entries(t.toJSON().Resources as Record<string, Resource>)
        .filter(([id, r]) => r.Type === 'AWS::Lambda::Function' && id.startsWith('FunctionsExecutors'))
        .map(([, r]) => {
          const variables = (r.Properties!.Environment as { Variables: Record<string, unknown> }).Variables;
          return [variables.JOB_TYPE as string, variables];
        }),
    );

  test('given as context, they reach the valuation executor only, under the names it reads', () => {
    const props = stackPropsFromContext(
      context({
        ...REQUIRED_SETTINGS,
        extraPriceSourceUrls: 'https://a.prices.lana-bank.io/btc, https://b.prices.lana-bank.io/btc',
        maxPriceJump: '0.15',
        maxPriceAgeSeconds: '120',
        collateralUpgradeBuffer: '0.1',
      }),
    );
    const variables = executorVariables(Template.fromStack(synthStack(props)));
    expect([...variables.keys()].sort()).toEqual(jobTypes.map((t) => t.type).sort());
    expect(variables.get('sync')).toMatchObject({
      LANA_PRICE_URLS_EXTRA: 'https://a.prices.lana-bank.io/btc,https://b.prices.lana-bank.io/btc',
      LANA_PRICE_MAX_JUMP: '0.15',
      LANA_PRICE_MAX_AGE_SECONDS: '120',
      LANA_COLLATERAL_UPGRADE_BUFFER: '0.1',
    });
    // The other executors never value collateral: the settings are not theirs.
    for (const [type, v] of variables)
      if (type !== 'sync') for (const name of VALUATION_VARIABLES) expect(v, type).not.toHaveProperty(name);
    // The valuation executor reads them with the parser the runtime uses.
    expect(lendingSettingsFromEnv(variables.get('sync') as NodeJS.ProcessEnv)).toMatchObject({
      extraPriceUrls: ['https://a.prices.lana-bank.io/btc', 'https://b.prices.lana-bank.io/btc'],
      maxPriceJump: '0.15',
      maxQuoteAgeSeconds: 120,
      upgradeBuffer: '0.1',
    });
  });

  test("unset, the functions' defaults apply: no variable is set", () => {
    for (const [type, v] of executorVariables(template))
      for (const name of VALUATION_VARIABLES) expect(v, type).not.toHaveProperty(name);
  });

  test('a value the functions would refuse fails the synth, naming the context key', () => {
    expect(() => synthStack({ maxPriceJump: '20%' })).toThrow(
      'context key "maxPriceJump" is not valid ("20%": expected a decimal share such as 0.2; "20%": expected a share between 0 and 1)',
    );
    expect(() => synthStack({ collateralUpgradeBuffer: '1.5' })).toThrow(/"collateralUpgradeBuffer"/);
    expect(() => synthStack({ maxPriceAgeSeconds: 0 })).toThrow(/"maxPriceAgeSeconds"/);
    expect(() => synthStack({ maxPriceAgeSeconds: 1.5 })).toThrow(/"maxPriceAgeSeconds"/);
    expect(() => synthStack({ extraPriceSourceUrls: ['http://prices.lana-bank.io/btc'] })).toThrow(
      /context key "extraPriceSourceUrls" must be an https URL/,
    );
    expect(() =>
      stackPropsFromContext(context({ ...REQUIRED_SETTINGS, maxPriceAgeSeconds: 'soon' })),
    ).toThrow(/"maxPriceAgeSeconds"/);
  });
});

describe('executors get what their job type declares, never what its name suggests', () => {
  test('every registered type declares its needs: notifications send e-mail, sync values collateral', () => {
    expect(Object.keys(EXECUTOR_NEEDS).sort()).toEqual(jobTypes.map((t) => t.type).sort());
    for (const t of jobTypes) {
      const needs = EXECUTOR_NEEDS[t.type as keyof typeof EXECUTOR_NEEDS];
      expect(needs.includes('email-sender'), t.type).toBe(t.type === 'notification');
      expect(needs.includes('valuation-settings'), t.type).toBe(t.type === 'sync');
    }
  });

  test('SES and PutEvents grants follow the declaration', () => {
    const policies = ofType('AWS::IAM::Policy');
    for (const t of jobTypes) {
      const role = `FunctionsExecutors${t.type.replace(/(^|-)([a-z0-9])/g, (_, __, c: string) => c.toUpperCase())}Role`;
      const actions = policies
        .filter(([id]) => id.startsWith(role))
        .flatMap(
          ([, p]) =>
            (p.Properties!.PolicyDocument as { Statement: { Action: string | string[] }[] }).Statement,
        )
        .flatMap((s) => ([] as string[]).concat(s.Action));
      const needs = EXECUTOR_NEEDS[t.type as keyof typeof EXECUTOR_NEEDS];
      expect(actions.includes('ses:SendEmail'), t.type).toBe(needs.includes('email-sender'));
      // Every executor may wake fetch-ready (follow-ups, or a slot handed back when out of time).
      expect(actions.includes('events:PutEvents'), t.type).toBe(true);
    }
  });
});

describe('reserved concurrency', () => {
  test("a job type's declared concurrency, when the registry has one, is its reservation", () => {
    // The executors construct reserves what each spec gets from the stack's rule.
    const app = new App({ context: { ...cdkJsonContext(), 'aws:cdk:bundling-stacks': [] } });
    const stack = new Stack(app, 'Executors');
    const database = new JobsDatabase(stack, 'Database', {
      databaseName: 'lana',
      deletionProtection: false,
      minCapacity: 0.5,
      maxCapacity: 1,
      backupRetentionDays: 1,
    });
    const queue = new sqs.Queue(stack, 'Failures');
    const spec = { timeoutSeconds: 60, leaseSeconds: 180, needs: [] };
    new Executors(stack, 'Executors', {
      database,
      bus: new events.EventBus(stack, 'Bus'),
      serviceName: 'lana-jobs',
      metricsNamespace: 'LanaJobs',
      defaultTypeConcurrency: 50,
      jobTypes: [
        { ...spec, type: 'declares-three', concurrency: 3 },
        { ...spec, type: 'declares-none' },
      ],
      reservedConcurrency: (t) => t.concurrency ?? 5,
      functionFailures: queue,
      deliveryFailures: queue,
      ...REQUIRED_SETTINGS,
    });
    const reserved = Object.values(Template.fromStack(stack).findResources('AWS::Lambda::Function'))
      .filter((f) => f.Properties.Environment?.Variables?.JOB_TYPE)
      .map((f) => [f.Properties.Environment.Variables.JOB_TYPE, f.Properties.ReservedConcurrentExecutions]);
    expect(reserved.sort()).toEqual([
      ['declares-none', 5],
      ['declares-three', 3],
    ]);
  });

  test('off by default; on, each executor gets its type’s concurrency (or the default) and fetch-ready 2', () => {
    for (const [id, r] of ofType('AWS::Lambda::Function'))
      expect(r.Properties!.ReservedConcurrentExecutions, id).toBeUndefined();
    const on = Template.fromStack(synthStack({ reserveConcurrency: true })).toJSON().Resources as Record<
      string,
      Resource
    >;
    const reserved = Object.entries(on)
      .filter(([id, r]) => r.Type === 'AWS::Lambda::Function' && id.startsWith('Functions'))
      .map(([id, r]) => [id, r.Properties!.ReservedConcurrentExecutions] as const);
    const declared = new Map(jobTypes.map((t) => [t.type, t.concurrency]));
    const typeOf = (id: string) =>
      (on[id]!.Properties as { Environment: { Variables: { JOB_TYPE: string } } }).Environment.Variables
        .JOB_TYPE;
    for (const [id, n] of reserved) {
      if (id.startsWith('FunctionsExecutors')) expect(n, id).toBe(declared.get(typeOf(id)) ?? 5);
      else if (id.startsWith('FunctionsFetchReady')) expect(n, id).toBe(2);
      else expect(n, id).toBeUndefined();
    }
  });
});

describe('database', () => {
  test('engine pinned to the newest Data API minor CDK lists; RDS never upgrades it on its own', () => {
    template.hasResourceProperties('AWS::RDS::DBCluster', {
      Engine: 'aurora-postgresql',
      EngineVersion: '18.6',
      AutoMinorVersionUpgrade: false,
    });
    template.hasResourceProperties('AWS::RDS::DBInstance', { AutoMinorVersionUpgrade: false });
  });

  test('sessions in UTC and SCRAM passwords through the cluster parameter group', () => {
    template.hasResourceProperties('AWS::RDS::DBClusterParameterGroup', {
      Family: 'aurora-postgresql18',
      Parameters: { timezone: 'UTC', password_encryption: 'scram-sha-256' },
    });
  });

  test('the PostgreSQL log group has a retention', () => {
    const [[, retention]] = ofType('Custom::LogRetention') as [[string, Resource]];
    expect(retention.Properties!.RetentionInDays).toBe(30);
    expect(JSON.stringify(retention.Properties!.LogGroupName)).toMatch(/\/aws\/rds\/cluster\/.*\/postgresql/);
  });

  test('master (single-user) and application (multi-user) rotation, neither at deploy time', () => {
    const schedules = ofType('AWS::SecretsManager::RotationSchedule');
    expect(schedules).toHaveLength(2);
    for (const [id, s] of schedules)
      expect(s.Properties, id).toMatchObject({
        RotateImmediatelyOnUpdate: false,
        RotationRules: { ScheduleExpression: 'rate(30 days)' },
      });
    // The rotation applications, by the SAR mapping each one's ApplicationId reads.
    const mappings = template.toJSON().Mappings as Record<string, { aws: { applicationId: string } }>;
    const apps = Object.fromEntries(
      ofType('AWS::Serverless::Application').map(([id, a]) => {
        const mapping = (a.Properties!.Location as { ApplicationId: { 'Fn::FindInMap': [string] } })
          .ApplicationId['Fn::FindInMap'][0];
        return [id, mappings[mapping]!.aws.applicationId];
      }),
    );
    expect(Object.entries(apps)).toEqual(
      expect.arrayContaining([
        [
          expect.stringMatching(/^DatabaseClusterRotationSingleUser/),
          expect.stringMatching(/RotationSingleUser$/),
        ],
        [
          expect.stringMatching(/^DatabaseClusterAppSecretRotation/),
          expect.stringMatching(/RotationMultiUser$/),
        ],
      ]),
    );
    // The application secret names its user and the master secret the multi-user rotation logs in with.
    template.hasResourceProperties('AWS::SecretsManager::Secret', {
      GenerateSecretString: {
        SecretStringTemplate: {
          'Fn::Join': [
            '',
            [
              '{"username":"lana_app","masterarn":"',
              { Ref: Match.stringLikeRegexp('^DatabaseClusterSecretAttachment') },
              '"}',
            ],
          ],
        },
      },
    });
  });
});

test('cdk.json carries every feature flag aws-cdk-lib recommends for a new app', () => {
  const cdkJson = JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'cdk.json'), 'utf8')) as {
    context: Record<string, unknown>;
  };
  expect(cdkJson.context).toMatchObject(CURRENTLY_RECOMMENDED_FLAGS);
});
