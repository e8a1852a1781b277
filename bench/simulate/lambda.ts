import type { Context } from 'aws-lambda';
import type { VirtualTime } from './virtual-time.js';

/** Lambda's documented retry interval for a throttled asynchronous event: 1 s, doubling, at most 5 min. */
export function throttleRetryMs(retry: number): number {
  return Math.min(300_000, 1000 * 2 ** retry);
}

export interface SimLambdaOptions {
  name: string;
  /** Reserved concurrency: invocations running at once. */
  concurrency: number;
  timeoutMs: number;
  /** An event older than this is dropped to the on-failure destination. */
  maxEventAgeMs: number;
  /** From the event reaching Lambda's queue to the invocation starting. */
  deliveryMs: number;
  handler: (event: unknown, context: Context) => Promise<unknown>;
}

/**
 * One Lambda function invoked asynchronously (as EventBridge invokes its targets): its internal queue,
 * its reserved concurrency, throttling with the documented backoff until the event's maximum age, then
 * the on-failure destination; a handler that throws goes there too (retryAttempts 0, as the stack sets).
 */
export class SimLambda {
  running = 0;
  maxRunning = 0;
  invocations = 0;
  throttles = 0;
  dropped = 0;
  failed = 0;
  /** Virtual milliseconds of invocation time (for GB-seconds). */
  busyMs = 0;
  /** Virtual start time of each invocation. */
  readonly starts: number[] = [];

  constructor(
    private readonly vt: VirtualTime,
    private readonly options: SimLambdaOptions,
  ) {}

  /** An event accepted into the function's asynchronous queue. */
  invoke(event: unknown): void {
    void this.deliver(event, this.vt.now, 0);
  }

  private async deliver(event: unknown, firstAt: number, retry: number): Promise<void> {
    await this.vt.sleep(this.options.deliveryMs);
    if (this.running >= this.options.concurrency) {
      this.throttles++;
      const wait = throttleRetryMs(retry);
      if (this.vt.now + wait - firstAt > this.options.maxEventAgeMs) {
        this.dropped++;
        return;
      }
      await this.vt.sleep(wait);
      return this.deliver(event, firstAt, retry + 1);
    }
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    this.invocations++;
    const startedAt = this.vt.now;
    this.starts.push(startedAt);
    const deadline = startedAt + this.options.timeoutMs;
    const context = { getRemainingTimeInMillis: () => deadline - this.vt.now } as Context;
    try {
      await this.options.handler(event, context);
    } catch {
      this.failed++;
    } finally {
      this.running--;
      this.busyMs += this.vt.now - startedAt;
    }
  }

  /** Events that ended in the on-failure destination: dropped when too old, or failed. */
  get onFailure(): number {
    return this.dropped + this.failed;
  }
}
