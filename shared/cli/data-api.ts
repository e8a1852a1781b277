import { createEnqueuedNudge } from '../aws/eventbridge-publisher.js';
import { dataApiDatabaseFromEnv } from '../db/data-api-driver.js';
import type { OpenedDatabase } from '../runtime/database.js';

/**
 * `--data-api`: every command runs against the deployed Aurora database through the RDS Data API. With
 * JOBS_BUS_NAME (a stack output) set, a job enqueued or retried here also wakes fetch-ready at once.
 */
export function openDataApiFromEnv(env: NodeJS.ProcessEnv): OpenedDatabase {
  const db = dataApiDatabaseFromEnv(env);
  const busName = env.JOBS_BUS_NAME;
  return {
    db,
    description: `RDS Data API ${env.DATA_API_RESOURCE_ARN ?? ''} (database ${env.DATA_API_DATABASE ?? ''})`,
    close: () => db.close(),
    ...(busName ? { wakeWorkers: createEnqueuedNudge({ busName }) } : {}),
  };
}
