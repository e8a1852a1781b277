/** A claim asks for about what the slots get through within this time (see `claimTarget`). */
const CLAIM_HORIZON_MS = 1000;

/**
 * How much a worker claims, and when it claims again, from the rate its runs finish and how long a claim
 * takes: slow jobs are claimed a few at a time and shared with other workers, fast ones in batches that
 * arrive before the local queue runs dry.
 */
export class ClaimSizer {
  /**
   * Claim-ahead: the next claim starts when the local queue falls below this many jobs, so that it returns
   * before the queue runs dry. It is the number of jobs the slots get through during about two claim
   * round trips (at least `concurrency`, at most `claimBatchSize`): slow jobs claim only what the slots
   * need, fast ones never wait for a claim.
   */
  lowWater: number;
  /**
   * How many jobs one claim asks for: what the slots get through in about `CLAIM_HORIZON_MS` at the rate
   * runs finish (at least `concurrency`, at most `claimBatchSize`). A worker starts small and grows within
   * a few claims when jobs are fast, while a worker of slow jobs never takes more than its slots can start
   * soon, leaving the rest to other workers instead of letting their leases run down in its queue.
   */
  claimTarget: number;
  /** Runs finished so far: the rate they finish at is what the slots can take (starts come in bursts). */
  private finishedCount = 0;
  private rateSample = { at: 0, finished: 0 };
  /** Smoothed runs finished per millisecond, and claim round trip in milliseconds. */
  private finishesPerMs = 0;
  private claimMs = 0;

  constructor(
    private readonly concurrency: number,
    private readonly claimBatchSize: number,
  ) {
    this.lowWater = concurrency;
    this.claimTarget = concurrency;
  }

  /** A run finished. */
  finished(): void {
    this.finishedCount++;
  }

  /** How many to claim now, given what the worker holds (less than 1: none). */
  room(held: number): number {
    return Math.min(this.claimTarget, this.lowWater + this.claimTarget - held);
  }

  /** Updates the claim size and the claim-ahead mark from the finish rate and claim time just observed. */
  claimed(claimStart: number, claimEnd: number): void {
    const { at, finished } = this.rateSample;
    const elapsed = claimEnd - at;
    if (at > 0 && elapsed > 0) {
      this.finishesPerMs = 0.5 * this.finishesPerMs + 0.5 * ((this.finishedCount - finished) / elapsed);
      this.claimMs = 0.5 * this.claimMs + 0.5 * (claimEnd - claimStart);
      const clamp = (n: number) => Math.min(this.claimBatchSize, Math.max(this.concurrency, Math.ceil(n)));
      this.lowWater = clamp(this.finishesPerMs * this.claimMs * 2);
      this.claimTarget = clamp(this.finishesPerMs * CLAIM_HORIZON_MS);
    }
    this.rateSample = { at: claimEnd, finished: this.finishedCount };
  }
}
