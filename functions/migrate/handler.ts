import type { CloudFormationCustomResourceEvent, Context } from 'aws-lambda';
import { migrate } from '../../shared/db/migrate.js';
import type { Database } from '../../shared/db/port.js';
import { createObservability, type Observability, withObservability } from '../lib/powertools.js';
import { runtimeFromEnv } from '../lib/runtime.js';

/**
 * A CloudFormation custom resource (behind the CDK Provider framework): applies the SQL migrations
 * bundled with the function through the Data API on every deploy. Applying them again is a no-op; a
 * failing migration fails the deployment, which rolls back.
 */
export function createMigrateHandler(deps: { db: Database; o: Observability }) {
  return async (
    event: Pick<CloudFormationCustomResourceEvent, 'RequestType'> & { PhysicalResourceId?: string },
  ) => {
    if (event.RequestType === 'Delete')
      return { PhysicalResourceId: event.PhysicalResourceId ?? 'lana-jobs-migrations' };
    const applied = await migrate(deps.db);
    deps.o.logger.info('migrations applied', { applied });
    return { PhysicalResourceId: 'lana-jobs-migrations', Data: { Applied: applied.join(',') } };
  };
}

const o = createObservability('migrate');
export const handler = withObservability((event: CloudFormationCustomResourceEvent, _context: Context) => {
  return createMigrateHandler({ db: runtimeFromEnv(o).db, o })(event);
}, o);
