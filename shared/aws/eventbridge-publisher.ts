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

/** The detail type that wakes fetch-ready at once after an enqueue (a rule on the jobs bus routes it). */
export const JOBS_ENQUEUED_DETAIL_TYPE = 'jobs.enqueued';

/** A sender nudges fetch-ready at most once per this window; the run it wakes claims again at its end. */
export const NUDGE_WINDOW_MS = 1_000;

/** What a `jobs.enqueued` event carries: when and by which window its sender coalesces (both optional). */
export interface NudgeDetail {
  /** The sender's clock when it sent the nudge (ISO 8601). */
  sentAt?: string;
  /** The sender skips further nudges for this long after `sentAt`. */
  windowMs?: number;
  /** `continue`: a fetch-ready run that stopped with work left started this one. */
  reason?: 'enqueued' | 'continue';
}

/**
 * A nudge: "new jobs are due", so fetch-ready runs now rather than at its next minute. Best effort: a
 * lost nudge only delays the jobs until that minute.
 *
 * Coalesced per sender: the first nudge goes at once, and for `windowMs` after it further calls send
 * nothing. The event says when it was sent and for how long its sender stays quiet, and the fetch-ready
 * run it wakes claims once more at the end of that window: a job whose nudge was skipped had committed
 * before that claim, so it still starts within about a window, and a burst of enqueues costs one run per
 * window per sender instead of one per enqueue. `windowMs: 0` sends every call (fetch-ready's own chain).
 */
export function createEnqueuedNudge(options: {
  busName: string;
  client?: EventBridgeClient;
  windowMs?: number;
  nowMs?: () => number;
  reason?: NudgeDetail['reason'];
}): () => Promise<void> {
  const client = options.client ?? new EventBridgeClient({});
  const windowMs = options.windowMs ?? NUDGE_WINDOW_MS;
  const nowMs = options.nowMs ?? Date.now;
  let lastSentAt = Number.NEGATIVE_INFINITY;
  return async () => {
    const now = nowMs();
    if (windowMs > 0 && now - lastSentAt < windowMs) return;
    lastSentAt = now;
    const detail: NudgeDetail = {
      sentAt: new Date(now).toISOString(),
      windowMs,
      reason: options.reason ?? 'enqueued',
    };
    try {
      const out = await client.send(
        new PutEventsCommand({
          Entries: [
            {
              EventBusName: options.busName,
              Source: JOB_EVENT_SOURCE,
              DetailType: JOBS_ENQUEUED_DETAIL_TYPE,
              Detail: JSON.stringify(detail),
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
    } catch (error) {
      // Not sent: the window covers nothing, so the next call tries again.
      if (lastSentAt === now) lastSentAt = Number.NEGATIVE_INFINITY;
      throw error;
    }
  };
}
