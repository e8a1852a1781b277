import { errorMessage } from '../jobs/errors.js';
import type { ClaimedJob } from '../jobs/model.js';
import type { JobTypeMap } from '../jobs/registry.js';
import type { AttemptRef, FailResult, JobTracker, QueueActivity, QueueState } from '../jobs/tracker.js';

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
  /**
   * Claims per run at most. Default 1,000: a run normally ends first, when a claim comes back short (no
   * due job left, or every type at its concurrency limit) or its time budget (`shouldContinue`) runs out.
   */
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
  /** The clock `lingerUntilMs` is read against. Default `Date.now`. */
  nowMs?: () => number;
  /**
   * Claim once more at this time (on `nowMs`'s clock) if the run ended earlier: a coalesced nudge's window
   * end, so the jobs whose senders skipped their nudge inside the window are claimed within it.
   */
  lingerUntilMs?: number;
  /**
   * Whether a job type has an executor here. A claimed job of any other type (enqueued by a newer
   * client, or through raw SQL) fails at once, permanently, with the reason, instead of being published to
   * a bus no rule matches and rescued an hour later. Default: every type has one.
   */
  hasExecutor?: (jobType: string) => boolean;
  /**
   * Starts one more run at once (on AWS a `jobs.enqueued` event on the bus): called when this run stops
   * with claimable work left (its last claim came back full), so a backlog drains at the executors'
   * capacity instead of one run a minute.
   */
  chain?: () => Promise<void>;
  /** Also read and report the last minute's activity (fetch-ready's scheduled run, once a minute). */
  reportActivity?: boolean;
}

export interface FanOutResult {
  /** Running jobs whose lease had expired and whose attempt had begun: failed attempts under the retry rule. */
  rescued: FailResult[];
  /** Claims that no executor began within their dispatch lease: handed back, not counted as attempts. */
  handedBack: number;
  /** The same per job type: a type whose claims keep coming back undelivered is not being delivered. */
  handedBackByType: Record<string, number>;
  claimed: number;
  /** Claim statements made. */
  claims: number;
  published: number;
  /** Jobs handed back to the queue because their event could not be published. */
  released: number;
  unpublished: { jobId: string; jobType: string; attempt: number; error: string }[];
  /** Jobs failed at once because no executor runs their type. */
  noExecutor: { jobId: string; jobType: string }[];
  /** PutEvents (or other publisher) calls made, resends included. */
  publishCalls: number;
  /** The run stopped with claimable work left and started another (`chain`). */
  chained: boolean;
  /** After the run: due jobs still waiting, and the age of the oldest. */
  queue: QueueState;
  /** With `reportActivity`: the last minute's enqueues and the attempts running long. */
  activity?: QueueActivity;
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
 * One fetch-ready run: rescue expired leases (a begun attempt fails under the retry rule, a claim no
 * executor began is handed back uncounted), then claim due jobs and publish an event per job (one
 * statement per claim; SKIP LOCKED, so overlapping runs never claim the same job; types with a concurrency
 * limit get at most their free slots) for as long as claims come back full and the time budget allows.
 * Every job whose event could not be published is released (its attempt never began: due again at once,
 * costing no attempt). A run that stops with work left chains one more; a run woken by a coalesced nudge
 * claims once more at the end of the nudge's window. Finally it reports the queue state (which also goes
 * to the metrics port).
 */
export async function fanOutDueJobs<M extends JobTypeMap, S>(
  tracker: JobTracker<M, S>,
  publisher: JobPublisher,
  options: FanOutOptions = {},
): Promise<FanOutResult> {
  const batchSize = options.batchSize ?? DEFAULT_CLAIM_BATCH;
  const maxClaims = options.maxClaims ?? 1000;
  const rescueLimit = options.rescueLimit ?? 1000;
  const sleep = options.sleep ?? defaultSleep;
  const nowMs = options.nowMs ?? Date.now;
  const result: Omit<FanOutResult, 'queue'> = {
    rescued: [],
    handedBack: 0,
    handedBackByType: {},
    claimed: 0,
    claims: 0,
    published: 0,
    released: 0,
    unpublished: [],
    noExecutor: [],
    publishCalls: 0,
    chained: false,
  };
  if (rescueLimit > 0) {
    for (const r of await tracker.rescueExpiredLeases(rescueLimit)) {
      if (r.undelivered) {
        result.handedBack++;
        result.handedBackByType[r.jobType] = (result.handedBackByType[r.jobType] ?? 0) + 1;
        continue;
      }
      result.rescued.push({
        id: r.id,
        jobType: r.jobType,
        attempt: r.attempt,
        status: r.status,
        scheduledAt: r.scheduledAt,
      });
    }
  }

  /** Claims and publishes until a claim comes back short, the bus refuses, or the budget ends. */
  const drain = async (): Promise<{ workLeft: boolean; refused: boolean }> => {
    for (let claim = 0; ; claim++) {
      if (result.claims >= maxClaims || (claim > 0 && options.shouldContinue && !options.shouldContinue())) {
        return { workLeft: true, refused: false };
      }
      const jobs = await tracker.fetchReady(batchSize);
      result.claims++;
      result.claimed += jobs.length;
      if (jobs.length === 0) return { workLeft: false, refused: false };
      const runnable = options.hasExecutor ? jobs.filter((j) => options.hasExecutor!(j.jobType)) : jobs;
      if (runnable.length < jobs.length) {
        const orphans = jobs.filter((j) => !options.hasExecutor!(j.jobType));
        await tracker.failMany(
          orphans.map((j) => ({
            id: j.id,
            attempt: j.attempts,
            error: `no executor for job type "${j.jobType}" in this deployment`,
            permanent: true,
          })),
        );
        for (const j of orphans) result.noExecutor.push({ jobId: j.id, jobType: j.jobType });
      }
      const events = runnable.map(toJobReadyEvent);
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
        return { workLeft: false, refused: true };
      }
      if (jobs.length < batchSize) return { workLeft: false, refused: false };
    }
  };

  let run = await drain();
  if (!run.workLeft && !run.refused && options.lingerUntilMs !== undefined) {
    const wait = options.lingerUntilMs - nowMs();
    if (wait > 0 && (!options.shouldContinue || options.shouldContinue())) {
      await sleep(wait);
      run = await drain();
    }
  }
  if (run.workLeft && options.chain) {
    await options.chain();
    result.chained = true;
  }

  const queue = await tracker.queueState();
  const activity = options.reportActivity ? await tracker.queueActivity() : undefined;
  return { ...result, queue, ...(activity ? { activity } : {}) };
}

/**
 * An executor invocation out of time for another job hands its slot to a new invocation: it claims its
 * type's next due job (within the type's limit, under a dispatch lease) and publishes that job's event,
 * as fetch-ready would. Done by each invocation for itself, so executors that started together and end
 * together do not all wake fetch-ready at once. An event that cannot be published is released (due
 * again at once, uncounted). Returns whether a job was handed over.
 */
export async function handOverSlot<M extends JobTypeMap, S>(
  tracker: JobTracker<M, S>,
  publisher: JobPublisher,
  jobType: string,
): Promise<boolean> {
  const [job] = await tracker.fetchReady(1, { jobType });
  if (!job) return false;
  const event = toJobReadyEvent(job);
  const { outcomes } = await publishWithRetry(publisher, [event]);
  if (outcomes[0]?.ok) return true;
  await tracker.release([{ id: event.jobId, attempt: event.attempt }]);
  return false;
}
