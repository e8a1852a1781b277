import { dataApiDatabaseFromEnv } from '../db/data-api-driver.js';
import type { OpenedDatabase } from '../runtime/database.js';

/** `--data-api`: every command runs against the deployed Aurora database through the RDS Data API. */
export function openDataApiFromEnv(env: NodeJS.ProcessEnv): OpenedDatabase {
  const db = dataApiDatabaseFromEnv(env);
  return {
    db,
    description: `RDS Data API ${env.DATA_API_RESOURCE_ARN ?? ''} (database ${env.DATA_API_DATABASE ?? ''})`,
    close: () => db.close(),
  };
}
