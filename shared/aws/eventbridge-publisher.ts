import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import type { JobPublisher, JobReadyEvent } from './fetch-ready.js';

/** The event source and detail type every per-type executor rule matches on. */
export const JOB_EVENT_SOURCE = 'lana.jobs';
export const JOB_EVENT_DETAIL_TYPE = 'job.ready';

/**
 * Publishes job events to the jobs bus with PutEvents: at most 10 entries per call (the API's limit). A
 * call can succeed while entries fail; the result says which, in request order, so only those are resent.
 */
export function createEventBridgePublisher(options: {
  busName: string;
  client?: EventBridgeClient;
}): JobPublisher {
  const client = options.client ?? new EventBridgeClient({});
  return {
    maxBatch: 10,
    async publish(events: readonly JobReadyEvent[]) {
      const out = await client.send(
        new PutEventsCommand({
          Entries: events.map((e) => ({
            EventBusName: options.busName,
            Source: JOB_EVENT_SOURCE,
            DetailType: JOB_EVENT_DETAIL_TYPE,
            Detail: JSON.stringify(e),
          })),
        }),
      );
      const entries = out.Entries ?? [];
      return events.map((_, i) => {
        const entry = entries[i];
        if (entry?.EventId && !entry.ErrorCode) return { ok: true };
        return {
          ok: false,
          error: `${entry?.ErrorCode ?? 'NoEntry'}: ${entry?.ErrorMessage ?? 'no result for this entry'}`,
        };
      });
    },
  };
}
