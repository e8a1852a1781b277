import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { CloudFormationCustomResourceEvent, Context } from 'aws-lambda';
import { type AppUser, provisionAppUser } from '../../shared/db/app-user.js';
import { migrate } from '../../shared/db/migrate.js';
import type { Database } from '../../shared/db/port.js';
import { createObservability, type Observability, withObservability } from '../lib/powertools.js';
import { required, runtimeFromEnv } from '../lib/runtime.js';
import { traceClient } from '../lib/tracing.js';

/**
 * A CloudFormation custom resource (behind the CDK Provider framework): applies the SQL migrations
 * bundled with the function through the Data API on every deploy, as the master user, then creates the
 * application user if missing and grants it DML on the tables (shared/db/app-user.ts). Applying them
 * again is a no-op; a failing migration fails the deployment, which rolls back. Migrations are
 * expand-only (shared/db/migrations/README.md): the previous code runs against them until the deploy
 * replaces it.
 */
export function createMigrateHandler(deps: {
  db: Database;
  o: Observability;
  /** The application user and its password; without it only the migrations run (local tests). */
  appUser?: () => Promise<AppUser>;
}) {
  return async (
    event: Pick<CloudFormationCustomResourceEvent, 'RequestType'> & { PhysicalResourceId?: string },
  ) => {
    if (event.RequestType === 'Delete')
      return { PhysicalResourceId: event.PhysicalResourceId ?? 'lana-jobs-migrations' };
    const applied = await migrate(deps.db);
    deps.o.logger.info('migrations applied', { applied });
    const data: Record<string, string> = { Applied: applied.join(',') };
    if (deps.appUser) {
      const user = await deps.appUser();
      const { created } = await provisionAppUser(deps.db, user);
      deps.o.logger.info(created ? 'application user created and granted' : 'application user granted', {
        user: user.name,
      });
      data.AppUser = user.name;
    }
    return { PhysicalResourceId: 'lana-jobs-migrations', Data: data };
  };
}

/** The application user's name (APP_DB_USER) and its password, from its secret (APP_DB_SECRET_ARN). */
export function appUserFromEnv(
  o: Observability,
  env: NodeJS.ProcessEnv = process.env,
  client: SecretsManagerClient = traceClient(o, new SecretsManagerClient({})),
): () => Promise<AppUser> {
  return async () => {
    const out = await client.send(
      new GetSecretValueCommand({ SecretId: required(env, 'APP_DB_SECRET_ARN') }),
    );
    const password = (JSON.parse(out.SecretString ?? '{}') as { password?: unknown }).password;
    if (typeof password !== 'string' || !password)
      throw new Error('the application user secret holds no password');
    return { name: required(env, 'APP_DB_USER'), password };
  };
}

const o = createObservability('migrate');
export const handler = withObservability((event: CloudFormationCustomResourceEvent, _context: Context) => {
  return createMigrateHandler({ db: runtimeFromEnv(o).db, o, appUser: appUserFromEnv(o) })(event);
}, o);
