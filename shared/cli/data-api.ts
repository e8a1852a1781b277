import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { FetchReadyWaker } from '../aws/waker.js';
import { dataApiDatabaseFromEnv } from '../db/data-api-driver.js';
import { errorMessage } from '../jobs/errors.js';
import type { OpenedDatabase } from '../runtime/database.js';

/**
 * `--data-api`: every command runs against the deployed Aurora database through the RDS Data API. With
 * JOBS_BUS_NAME (a stack output) set, a job enqueued or retried here also wakes fetch-ready at once.
 */
export function openDataApiFromEnv(env: NodeJS.ProcessEnv): OpenedDatabase {
  const db = dataApiDatabaseFromEnv(env);
  const busName = env.JOBS_BUS_NAME;
  const eventBridge = busName ? new EventBridgeClient({}) : undefined;
  return {
    db,
    description: `RDS Data API ${env.DATA_API_RESOURCE_ARN ?? ''} (database ${env.DATA_API_DATABASE ?? ''})`,
    close: async () => {
      eventBridge?.destroy();
      await db.close();
    },
    ...(busName && eventBridge ? { waker: FetchReadyWaker.forBus({ busName, client: eventBridge }) } : {}),
  };
}

/**
 * After a command's write made jobs due now (see `OpenedDatabase.waker`). Best effort: a failed wake only
 * warns on `stderr`, naming what now runs at fetch-ready's next minute (`the job`, `the valuation`).
 */
export async function wakeFetchReady(
  opened: OpenedDatabase | null,
  stderr: NodeJS.WritableStream,
  what = 'the job runs',
): Promise<void> {
  await opened?.waker?.wake((err) => {
    stderr.write(`warning: could not wake fetch-ready (${errorMessage(err)}); ${what} at its next minute\n`);
  });
}
