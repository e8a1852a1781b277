import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { createdJobDueNow, type EnqueueResult } from '../jobs/tracker.js';
import { JOB_EVENT_SOURCE } from './eventbridge-publisher.js';

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

/** Where a failed wake is reported: the job is committed all the same and starts at fetch-ready's next minute. */
export type WakeErrorReporter = (error: unknown) => void;

const warnOnConsole: WakeErrorReporter = (error) =>
  console.warn('lana-jobs: could not wake fetch-ready; the job starts at its next minute', error);

/**
 * Wakes fetch-ready after a write that made a job due now (an enqueue, a retry, a resume), so the job
 * starts within about a second instead of at fetch-ready's next minute. Every door that writes such jobs
 * on AWS uses it: `AwsJobClient`, an executor's follow-ups, the CLI and the console with `--data-api`.
 * Locally it is not needed: the insert trigger's NOTIFY wakes the workers.
 *
 * Best effort, and never throws: a failed nudge is reported and the write stands (throwing would make a
 * caller retry a committed enqueue). Nudges are coalesced per waker (`createEnqueuedNudge`).
 */
export class FetchReadyWaker {
  constructor(
    private readonly send: () => Promise<void>,
    private readonly onError: WakeErrorReporter = warnOnConsole,
  ) {}

  /** A waker that sends `jobs.enqueued` events to `busName` through `client`. */
  static forBus(options: {
    busName: string;
    client: EventBridgeClient;
    windowMs?: number;
    nowMs?: () => number;
    onError?: WakeErrorReporter;
  }): FetchReadyWaker {
    return new FetchReadyWaker(
      createEnqueuedNudge({
        busName: options.busName,
        client: options.client,
        windowMs: options.windowMs,
        nowMs: options.nowMs,
      }),
      options.onError,
    );
  }

  /** Wakes fetch-ready now. Returns whether the nudge was sent (or covered by one this window). */
  async wake(onError: WakeErrorReporter = this.onError): Promise<boolean> {
    try {
      await this.send();
      return true;
    } catch (error) {
      try {
        onError(error);
      } catch {
        // A reporter that throws must not turn a committed write into a failed one.
      }
      return false;
    }
  }

  /**
   * After enqueues committed outside a caller's transaction: wakes fetch-ready when one created a job due
   * at `now`. Returns whether it woke it.
   */
  async afterEnqueue(
    results: readonly EnqueueResult[],
    now: Date,
    onError: WakeErrorReporter = this.onError,
  ): Promise<boolean> {
    return createdJobDueNow(results, now) ? this.wake(onError) : false;
  }
}
