import { errorMessage } from './errors.js';
import type { ClaimedJob } from './model.js';
import type { JobTypeMap } from './registry.js';
import type { AttemptRef, JobTracker, QueueState } from './tracker.js';

/**
 * Fan-out: claim due jobs, publish one "job ready" event per job, hand back what could not be published.
 * It is the fetch-ready Lambda's logic, kept here (against a small publisher port) so it is tested with
 * the real SQL and a fake or mocked publisher alike.
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

/** Publishes job-ready events. One call carries at most `maxBatchSize` entries. */
export interface JobPublisher {
  readonly maxBatchSize: number;
  /**
   * Outcomes in input order. A call may partly fail (some entries accepted, others not); throwing means
   * no entry of the call is known to be accepted.
   */
  publish(events: readonly JobReadyEvent[]): Promise<PublishOutcome[]>;
}

export interface FanOutOptions {
  /** Jobs claimed per statement. Default 25: 25 payloads of at most 32 KiB stay under the Data API's 1 MiB. */
  claimBatchSize?: number;
  /** Claim again while the previous claim came back full, at most this many claims per run. Default 1. */
  maxClaims?: number;
  /** Stop claiming when this returns false (the Lambda's remaining time). */
  shouldContinue?: () => boolean;
  /** Publish calls per entry before it is released. Default 3. */
  maxPublishAttempts?: number;
  /** Pause before re-sending failed entries, by retry number (1, 2, …). Default 100 ms · 2^(n-1). */
  retryDelayMs?: (retry: number) => number;
  /** Rescue expired leases first (bounded per run). Default 1000; 0 skips the rescue. */
  rescueLimit?: number;
  sleep?: (ms: number) => Promise<void>;
}

export interface FanOutReport {
  /** Running jobs whose lease had expired, turned into failed attempts under the retry rule. */
  rescued: number;
  claimed: number;
  published: number;
  /** Jobs handed back to the queue because their event could not be published. */
  released: number;
  unpublished: { jobId: string; jobType: string; attempt: number; error: string }[];
  /** After the run: due jobs still waiting, and the age of the oldest. */
  queue: QueueState;
}

export const DEFAULT_CLAIM_BATCH_SIZE = 25;

const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function toJobReadyEvent(job: ClaimedJob): JobReadyEvent {
  return { jobId: job.id, jobType: job.jobType, attempt: job.attempts, payload: job.payload };
}

/**
 * Publishes `events` in calls of at most `publisher.maxBatchSize`, re-sending only the entries that
 * failed, up to `maxPublishAttempts` calls per entry. Returns the final outcome of each, in input order.
 */
export async function publishWithRetry(
  publisher: JobPublisher,
  events: readonly JobReadyEvent[],
  options: Pick<FanOutOptions, 'maxPublishAttempts' | 'retryDelayMs' | 'sleep'> = {},
): Promise<PublishOutcome[]> {
  const maxAttempts = options.maxPublishAttempts ?? 3;
  const delay = options.retryDelayMs ?? ((n: number) => 100 * 2 ** (n - 1));
  const sleep = options.sleep ?? defaultSleep;
  const outcomes: PublishOutcome[] = events.map(() => ({ ok: false, error: 'not published' }));
  let pending = events.map((_, i) => i);
  for (let attempt = 1; attempt <= maxAttempts && pending.length > 0; attempt++) {
    if (attempt > 1) await sleep(delay(attempt - 1));
    const failed: number[] = [];
    for (let start = 0; start < pending.length; start += publisher.maxBatchSize) {
      const indexes = pending.slice(start, start + publisher.maxBatchSize);
      let results: PublishOutcome[];
      try {
        results = await publisher.publish(indexes.map((i) => events[i]!));
      } catch (err) {
        const error = errorMessage(err);
        results = indexes.map(() => ({ ok: false, error }));
      }
      indexes.forEach((eventIndex, k) => {
        // A publisher answering fewer outcomes than entries leaves the rest unconfirmed: re-send them.
        const outcome = results[k] ?? { ok: false, error: 'no outcome returned for this entry' };
        outcomes[eventIndex] = outcome;
        if (!outcome.ok) failed.push(eventIndex);
      });
    }
    pending = failed;
  }
  return outcomes;
}

/**
 * One fetch-ready run: rescue expired leases, claim due jobs (one statement per claim, SKIP LOCKED so
 * overlapping runs never claim the same job), publish an event per job, release every job whose event
 * could not be published (its attempt never began, so it is due again at once and costs no attempt),
 * then report the queue state.
 */
export async function fanOutReadyJobs<M extends JobTypeMap, S>(
  tracker: JobTracker<M, S>,
  publisher: JobPublisher,
  options: FanOutOptions = {},
): Promise<FanOutReport> {
  const claimBatchSize = options.claimBatchSize ?? DEFAULT_CLAIM_BATCH_SIZE;
  const maxClaims = options.maxClaims ?? 1;
  const rescueLimit = options.rescueLimit ?? 1000;
  const report: Omit<FanOutReport, 'queue'> = {
    rescued: 0,
    claimed: 0,
    published: 0,
    released: 0,
    unpublished: [],
  };
  if (rescueLimit > 0) report.rescued = (await tracker.rescueExpiredLeases(rescueLimit)).length;

  for (let claim = 0; claim < maxClaims; claim++) {
    if (claim > 0 && options.shouldContinue && !options.shouldContinue()) break;
    const jobs = await tracker.fetchReady(claimBatchSize);
    report.claimed += jobs.length;
    if (jobs.length === 0) break;
    const events = jobs.map(toJobReadyEvent);
    const outcomes = await publishWithRetry(publisher, events, options);
    const toRelease: AttemptRef[] = [];
    outcomes.forEach((outcome, i) => {
      const event = events[i]!;
      if (outcome.ok) {
        report.published++;
        return;
      }
      toRelease.push({ id: event.jobId, attempt: event.attempt });
      report.unpublished.push({
        jobId: event.jobId,
        jobType: event.jobType,
        attempt: event.attempt,
        error: outcome.error,
      });
    });
    if (toRelease.length > 0) {
      report.released += (await tracker.release(toRelease)).length;
      // The bus is refusing events: claiming more now would only claim and release again.
      break;
    }
    if (jobs.length < claimBatchSize) break;
  }

  const queue = await tracker.queueState();
  return { ...report, queue };
}
