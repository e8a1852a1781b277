import { errorMessage } from './errors.js';
import type { ClaimedJob } from './model.js';
import type { JobTypeMap } from './registry.js';
import type { AttemptRef, FailResult, JobTracker, QueueState } from './tracker.js';

/**
 * Fan-out: claim due jobs, publish one "job ready" event per job, hand back what could not be published.
 * It is the fetch-ready Lambda's logic, kept here against a small publisher port so it runs with the real
 * SQL in tests, with EventBridge mocked or faked.
 */

/** What an executor receives for one claimed job. */
export interface JobReadyEvent {
  jobId: string;
  jobType: string;
  /** The claimed attempt: the executor's fencing token. */
  attempt: number;
  payload: unknown;
}

export type PublishOutcome = { ok: true } | { ok: false; error: string };

/** Publishes job-ready events; one call carries at most `maxBatch` entries. */
export interface JobPublisher {
  readonly maxBatch: number;
  /**
   * Outcomes in input order. A call may partly fail (some entries accepted, others not); throwing means
   * no entry of the call is known to be accepted.
   */
  publish(events: readonly JobReadyEvent[]): Promise<PublishOutcome[]>;
}

export interface FanOutOptions {
  /**
   * Jobs claimed per statement. Default 30: 30 payloads of at most 16 KiB stay under the Data API's 1 MiB,
   * and 30 events make exactly 3 full PutEvents calls.
   */
  batchSize?: number;
  /** Claim again while the previous claim came back full, at most this many claims per run. Default 1. */
  maxClaims?: number;
  /** Checked before each further claim (the Lambda passes "enough time left"). */
  shouldContinue?: () => boolean;
  /** Publish calls per entry before its job is released. Default 3. */
  maxPublishAttempts?: number;
  /** Pause before re-sending failed entries, by resend number (1, 2, …). Default 100 ms · 2^(n-1). */
  retryDelayMs?: (resend: number) => number;
  /** Expired leases rescued first, at most this many per run. Default 1000; 0 skips the rescue. */
  rescueLimit?: number;
  sleep?: (ms: number) => Promise<void>;
}

export interface FanOutResult {
  /** Running jobs whose lease had expired, now failed attempts under the retry rule. */
  rescued: FailResult[];
  claimed: number;
  published: number;
  /** Jobs handed back to the queue because their event could not be published. */
  released: number;
  unpublished: { jobId: string; jobType: string; attempt: number; error: string }[];
  /** PutEvents (or other publisher) calls made, resends included. */
  publishCalls: number;
  /** After the run: due jobs still waiting, and the age of the oldest. */
  queue: QueueState;
}

export const DEFAULT_CLAIM_BATCH = 30;

const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function toJobReadyEvent(job: ClaimedJob): JobReadyEvent {
  return { jobId: job.id, jobType: job.jobType, attempt: job.attempts, payload: job.payload };
}

/**
 * Publishes `events` in calls of at most `publisher.maxBatch`. After each call only its failed entries are
 * sent again (up to `maxPublishAttempts` calls per entry, with a pause) before the next batch goes out.
 * Returns each event's final outcome, in input order, and the number of calls made.
 */
export async function publishWithRetry(
  publisher: JobPublisher,
  events: readonly JobReadyEvent[],
  options: Pick<FanOutOptions, 'maxPublishAttempts' | 'retryDelayMs' | 'sleep'> = {},
): Promise<{ outcomes: PublishOutcome[]; calls: number }> {
  const maxAttempts = options.maxPublishAttempts ?? 3;
  const delay = options.retryDelayMs ?? ((n: number) => 100 * 2 ** (n - 1));
  const sleep = options.sleep ?? defaultSleep;
  const outcomes: PublishOutcome[] = events.map(() => ({ ok: false, error: 'not published' }));
  let calls = 0;
  for (let start = 0; start < events.length; start += publisher.maxBatch) {
    let pending = events.map((_, i) => i).slice(start, start + publisher.maxBatch);
    for (let attempt = 1; attempt <= maxAttempts && pending.length > 0; attempt++) {
      if (attempt > 1) await sleep(delay(attempt - 1));
      calls++;
      let results: PublishOutcome[];
      try {
        results = await publisher.publish(pending.map((i) => events[i]!));
      } catch (err) {
        const error = errorMessage(err);
        results = pending.map(() => ({ ok: false, error }));
      }
      const failed: number[] = [];
      pending.forEach((eventIndex, k) => {
        // Fewer outcomes than entries leaves the rest unconfirmed: they are sent again.
        const outcome = results[k] ?? { ok: false, error: 'no outcome returned for this entry' };
        outcomes[eventIndex] = outcome;
        if (!outcome.ok) failed.push(eventIndex);
      });
      pending = failed;
    }
  }
  return { outcomes, calls };
}

/**
 * One fetch-ready run: rescue expired leases, claim due jobs (one statement per claim; SKIP LOCKED, so
 * overlapping runs never claim the same job), publish an event per job, release every job whose event
 * could not be published (its attempt never began, so it is due again at once and costs no attempt), and
 * report the queue state (which also goes to the metrics port).
 */
export async function fanOutDueJobs<M extends JobTypeMap, S>(
  tracker: JobTracker<M, S>,
  publisher: JobPublisher,
  options: FanOutOptions = {},
): Promise<FanOutResult> {
  const batchSize = options.batchSize ?? DEFAULT_CLAIM_BATCH;
  const maxClaims = options.maxClaims ?? 1;
  const rescueLimit = options.rescueLimit ?? 1000;
  const result: Omit<FanOutResult, 'queue'> = {
    rescued: [],
    claimed: 0,
    published: 0,
    released: 0,
    unpublished: [],
    publishCalls: 0,
  };
  if (rescueLimit > 0) result.rescued = await tracker.rescueExpiredLeases(rescueLimit);

  for (let claim = 0; claim < maxClaims; claim++) {
    if (claim > 0 && options.shouldContinue && !options.shouldContinue()) break;
    const jobs = await tracker.fetchReady(batchSize);
    result.claimed += jobs.length;
    if (jobs.length === 0) break;
    const events = jobs.map(toJobReadyEvent);
    const { outcomes, calls } = await publishWithRetry(publisher, events, options);
    result.publishCalls += calls;
    const toRelease: AttemptRef[] = [];
    outcomes.forEach((outcome, i) => {
      const event = events[i]!;
      if (outcome.ok) {
        result.published++;
        return;
      }
      toRelease.push({ id: event.jobId, attempt: event.attempt });
      result.unpublished.push({
        jobId: event.jobId,
        jobType: event.jobType,
        attempt: event.attempt,
        error: outcome.error,
      });
    });
    if (toRelease.length > 0) {
      result.released += (await tracker.release(toRelease)).length;
      // The bus is refusing events: claiming more now would only claim and release again.
      break;
    }
    if (jobs.length < batchSize) break;
  }

  const queue = await tracker.queueState();
  return { ...result, queue };
}
