/**
 * Virtual time for a discrete-event simulation that runs real code doing real I/O. Processes wait on
 * `sleep` (virtual) or on real I/O wrapped in `real`. Time advances one timer at a time, and only once
 * nothing real is in flight and the event loop has settled: every step then runs alone, so a run is a
 * function of its seed, whatever the machine's speed.
 */
export class VirtualTime {
  /** Virtual milliseconds since the start. */
  now = 0;
  /** The wall-clock instant virtual time 0 stands for (the SQL's `:now` is epoch + now). */
  readonly epochMs: number;
  private timers: { at: number; seq: number; resolve: () => void }[] = [];
  private seq = 0;
  private inflight = 0;
  private activity = 0;

  constructor(epochMs: number) {
    this.epochMs = epochMs;
  }

  date(): Date {
    return new Date(this.epochMs + this.now);
  }

  nowMs(): number {
    return this.epochMs + this.now;
  }

  /** Resolves once virtual time has advanced by `ms`. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.push(this.now + Math.max(0, ms), resolve);
    });
  }

  /** Runs `fn` (a process of its own) at virtual time `at`. */
  at(at: number, fn: () => void): void {
    this.push(Math.max(at, this.now), fn);
  }

  /** Real I/O: time does not advance while it is in flight. */
  async real<T>(work: () => Promise<T>): Promise<T> {
    this.inflight++;
    this.activity++;
    try {
      return await work();
    } finally {
      this.inflight--;
      this.activity++;
    }
  }

  /** Advances time timer by timer until `done()` holds after a step, or no timer is left. */
  async run(done: () => boolean): Promise<void> {
    await this.settle();
    while (!done()) {
      const next = this.pop();
      if (!next) return;
      this.now = next.at;
      next.resolve();
      await this.settle();
    }
  }

  private push(at: number, resolve: () => void): void {
    this.activity++;
    const timer = { at, seq: this.seq++, resolve };
    // Binary insertion keeps (at, seq) order; pop takes from the front.
    let lo = 0;
    let hi = this.timers.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const t = this.timers[mid]!;
      if (t.at < at || (t.at === at && t.seq < timer.seq)) lo = mid + 1;
      else hi = mid;
    }
    this.timers.splice(lo, 0, timer);
  }

  private pop() {
    return this.timers.shift();
  }

  /** Waits until nothing real is in flight and two event-loop turns pass with nothing new. */
  private async settle(): Promise<void> {
    let quiet = 0;
    let seen = -1;
    while (quiet < 2) {
      await new Promise<void>((r) => setImmediate(r));
      if (this.inflight === 0 && this.activity === seen) quiet++;
      else quiet = 0;
      seen = this.activity;
    }
  }
}
