import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { CustomResource, Duration, RemovalPolicy } from 'aws-cdk-lib';
import type { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as cr from 'aws-cdk-lib/custom-resources';
import { Construct } from 'constructs';
import { MIGRATIONS_DIR_IN_BUNDLE, PROJECT_ROOT } from './bundling.js';
import { createJobsFunction, type FunctionEnvironment } from './lambda-function.js';

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
 * The migrations custom resource: on stack creation and on every deploy that changes the SQL, it applies
 * the migrations through the Data API as the master user, then creates the application user if missing
 * and grants it DML on the tables (functions/migrate/handler.ts). Everything else in the stack that runs
 * code waits for it (JobFunctions), so no function runs against a schema older than its code.
 */
export class Migrations extends Construct {
  readonly fn: NodejsFunction;
  readonly provider: cr.Provider;
  readonly resource: CustomResource;

  constructor(scope: Construct, id: string, props: FunctionEnvironment) {
    super(scope, id);
    const { database } = props;
    this.fn = createJobsFunction(this, 'Function', props, {
      entry: 'migrate',
      timeout: Duration.minutes(10),
      retryAttempts: 0,
      copyMigrations: true,
      // DDL and the application user's grants: the only function with the master secret.
      secret: database.masterSecret,
      environment: {
        LANA_MIGRATIONS_DIR: MIGRATIONS_DIR_IN_BUNDLE,
        APP_DB_USER: database.appUser,
        APP_DB_SECRET_ARN: database.appSecret.secretArn,
      },
    });
    // To create the application user with the password its secret holds.
    database.appSecret.grantRead(this.fn);
    this.provider = new cr.Provider(this, 'Provider', {
      onEventHandler: this.fn,
      logGroup: new logs.LogGroup(this, 'ProviderLogs', {
        retention: logs.RetentionDays.ONE_MONTH,
        removalPolicy: RemovalPolicy.DESTROY,
      }),
    });
    this.resource = new CustomResource(this, 'Applied', {
      serviceToken: this.provider.serviceToken,
      resourceType: 'Custom::LanaMigrations',
      properties: {
        MigrationsHash: migrationsHash(),
        AppUser: database.appUser,
        AppSecretArn: database.appSecret.secretArn,
      },
    });
    // The writer instance must be up before the Data API can run anything.
    this.resource.node.addDependency(database.cluster);
  }
}
