import type { ClaimedJob } from '../jobs/model.js';

/**
 * Claimed jobs waiting for a free slot, kept as the claim batches they arrived in: one record per claim
 * rather than per job, with the claim's time on this process's monotonic clock.
 */
export class LocalQueue {
  private batches: { jobs: ClaimedJob[]; next: number; claimedAt: number }[] = [];
  length = 0;

  push(jobs: ClaimedJob[], claimedAt: number): void {
    if (jobs.length === 0) return;
    this.batches.push({ jobs, next: 0, claimedAt });
    this.length += jobs.length;
  }

  /** The claim time of the job `shift()` would return next. */
  get headClaimedAt(): number {
    return this.batches[0]?.claimedAt ?? 0;
  }

  shift(): ClaimedJob | undefined {
    const batch = this.batches[0];
    if (!batch) return undefined;
    const job = batch.jobs[batch.next++];
    if (batch.next >= batch.jobs.length) this.batches.shift();
    this.length--;
    return job;
  }

  /** Empties the queue, returning what it held. */
  drain(): ClaimedJob[] {
    const all = this.batches.flatMap((b) => b.jobs.slice(b.next));
    this.batches = [];
    this.length = 0;
    return all;
  }
}

/**
 * Jobs of limited types taken from the queue while the worker already ran as many of their type as it
 * holds slots: each waits, by type and in claim order, for one of those slots.
 */
export class ParkedJobs {
  private readonly byType = new Map<string, { job: ClaimedJob; claimedAt: number }[]>();
  length = 0;

  park(job: ClaimedJob, claimedAt: number): void {
    const waiting = this.byType.get(job.jobType) ?? [];
    waiting.push({ job, claimedAt });
    this.byType.set(job.jobType, waiting);
    this.length++;
  }

  /** Takes parked jobs, oldest claims first within a type, while `mayStart(type)` holds for the next. */
  *take(mayStart: (type: string) => boolean): Generator<{ job: ClaimedJob; claimedAt: number }> {
    for (const [type, waiting] of this.byType) {
      while (waiting.length > 0 && mayStart(type)) {
        this.length--;
        yield waiting.shift()!;
      }
      if (waiting.length === 0) this.byType.delete(type);
    }
  }

  /** Empties it, returning what it held. */
  drain(): ClaimedJob[] {
    const all = [...this.byType.values()].flatMap((waiting) => waiting.map((w) => w.job));
    this.byType.clear();
    this.length = 0;
    return all;
  }
}
