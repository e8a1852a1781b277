import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import type { JobPublisher, JobReadyEvent } from '../jobs/fan-out.js';

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

/** The detail type that wakes fetch-ready at once after an enqueue (a rule on the jobs bus routes it). */
export const JOBS_ENQUEUED_DETAIL_TYPE = 'jobs.enqueued';

/**
 * A nudge: "new jobs are due", so fetch-ready runs now rather than at its next minute. Best effort: a
 * lost nudge only delays the jobs until that minute.
 */
export function createEnqueuedNudge(options: {
  busName: string;
  client?: EventBridgeClient;
}): () => Promise<void> {
  const client = options.client ?? new EventBridgeClient({});
  return async () => {
    const out = await client.send(
      new PutEventsCommand({
        Entries: [
          {
            EventBusName: options.busName,
            Source: JOB_EVENT_SOURCE,
            DetailType: JOBS_ENQUEUED_DETAIL_TYPE,
            Detail: '{}',
          },
        ],
      }),
    );
    // PutEvents answers 200 with the entry rejected (throttled, an internal error): that is a failed nudge.
    // (A bus name that does not exist is not reported at all: EventBridge accepts the event and drops it.)
    const entry = out.Entries?.[0];
    if ((out.FailedEntryCount ?? 0) > 0 || !entry?.EventId) {
      throw new Error(
        `the jobs.enqueued event was not accepted (${entry?.ErrorCode ?? 'no entry'}: ${entry?.ErrorMessage ?? 'no result'})`,
      );
    }
  };
}
