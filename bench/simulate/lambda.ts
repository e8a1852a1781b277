import { AsyncLocalStorage } from 'node:async_hooks';
import type { Context } from 'aws-lambda';
import type { VirtualTime } from './virtual-time.js';

/** Lambda's documented retry interval for a throttled asynchronous event: 1 s, doubling, at most 5 min. */
export function throttleRetryMs(retry: number): number {
  return Math.min(300_000, 1000 * 2 ** retry);
}

/** One invocation, as the code it runs sees it: killed (timeout, crash) means its environment is gone. */
export interface Invocation {
  readonly functionName: string;
  killed: boolean;
  /** Ends the invocation now, as a crash of its environment would (the code's later calls fail). */
  kill(): void;
}

const invocations = new AsyncLocalStorage<Invocation>();

/** The invocation the calling code runs in, if any. */
export function currentInvocation(): Invocation | undefined {
  return invocations.getStore();
}

/** Throws when the calling code's invocation has been killed: a dead environment makes no more calls. */
export function assertAlive(): void {
  if (currentInvocation()?.killed) throw new Error('the invocation was killed');
}

/**
 * The account's concurrency: every function without a reservation shares what the reservations leave
 * (the account's limit, 1,000 by default, minus the reserved total).
 */
export class AccountConcurrency {
  private reserved = 0;
  unreservedRunning = 0;

  constructor(readonly limit: number) {}

  reserve(n: number): void {
    this.reserved += n;
    if (this.limit - this.reserved < 100)
      throw new Error('Lambda keeps at least 100 executions unreserved in an account');
  }

  get unreserved(): number {
    return this.limit - this.reserved;
  }
}

export interface SimLambdaOptions {
  name: string;
  /** Reserved concurrency; undefined runs in the account's unreserved pool. */
  reservedConcurrency?: number;
  account: AccountConcurrency;
  timeoutMs: number;
  /** An event older than this is dropped to the on-failure destination. */
  maxEventAgeMs: number;
  /** From the event reaching Lambda's queue to the invocation starting. */
  deliveryMs: number;
  /** The init phase of a new execution environment (0: no cold starts). */
  coldStartMs?: number;
  /** An execution environment idle this long is reclaimed. Default 10 minutes. */
  idleEnvironmentMs?: number;
  /** Draws for the cold starts (±25 % around `coldStartMs`). */
  random?: () => number;
  handler: (event: unknown, context: Context) => Promise<unknown>;
}

/**
 * One Lambda function invoked asynchronously (as EventBridge invokes its targets): its internal queue, its
 * concurrency (reserved, or the account's unreserved pool shared with every function without a
 * reservation), throttling with the documented backoff until the event's maximum age, then the on-failure
 * destination; execution environments, each paying an init phase when new and reused while warm; the
 * timeout, which kills the invocation (its environment is reset). A handler that throws goes to the
 * on-failure destination (retryAttempts 0, as the stack sets).
 */
export class SimLambda {
  running = 0;
  maxRunning = 0;
  invocations = 0;
  throttles = 0;
  dropped = 0;
  failed = 0;
  timedOut = 0;
  killed = 0;
  coldStarts = 0;
  /** Virtual milliseconds of invocation time, init phases included (for GB-seconds). */
  busyMs = 0;
  /** Virtual start time of each invocation. */
  readonly starts: number[] = [];
  /** When each idle execution environment was last used; the newest is reused first. */
  private readonly idle: number[] = [];

  constructor(
    private readonly vt: VirtualTime,
    private readonly options: SimLambdaOptions,
  ) {
    if (options.reservedConcurrency !== undefined) options.account.reserve(options.reservedConcurrency);
  }

  /** An event accepted into the function's asynchronous queue. */
  invoke(event: unknown): void {
    void this.deliver(event, this.vt.now, 0);
  }

  private hasSlot(): boolean {
    const { reservedConcurrency, account } = this.options;
    if (reservedConcurrency !== undefined) return this.running < reservedConcurrency;
    return account.unreservedRunning < account.unreserved;
  }

  private async deliver(event: unknown, firstAt: number, retry: number): Promise<void> {
    await this.vt.sleep(this.options.deliveryMs);
    if (!this.hasSlot()) {
      this.throttles++;
      const wait = throttleRetryMs(retry);
      if (this.vt.now + wait - firstAt > this.options.maxEventAgeMs) {
        this.dropped++;
        return;
      }
      await this.vt.sleep(wait);
      return this.deliver(event, firstAt, retry + 1);
    }
    const pooled = this.options.reservedConcurrency === undefined;
    this.running++;
    if (pooled) this.options.account.unreservedRunning++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    this.invocations++;
    const startedAt = this.vt.now;
    this.starts.push(startedAt);
    let environmentLives = true;
    try {
      // A warm environment, if one is left; else a new one pays its init phase.
      const idleFor = this.options.idleEnvironmentMs ?? 600_000;
      while (this.idle.length > 0 && this.vt.now - this.idle[0]! > idleFor) this.idle.shift();
      if (this.idle.length > 0) this.idle.pop();
      else if ((this.options.coldStartMs ?? 0) > 0) {
        this.coldStarts++;
        const draw = this.options.random?.() ?? 0.5;
        await this.vt.sleep(this.options.coldStartMs! * (0.75 + 0.5 * draw));
      }
      const deadline = this.vt.now + this.options.timeoutMs;
      const context = { getRemainingTimeInMillis: () => deadline - this.vt.now } as Context;
      let endNow!: (how: 'killed' | 'timeout') => void;
      const ended = new Promise<'killed' | 'timeout'>((resolve) => {
        endNow = resolve;
      });
      const invocation: Invocation = {
        functionName: this.options.name,
        killed: false,
        kill: () => {
          invocation.killed = true;
          endNow('killed');
        },
      };
      const run = invocations.run(invocation, () => this.options.handler(event, context));
      void this.vt.sleep(this.options.timeoutMs).then(() => endNow('timeout'));
      const how = await Promise.race([run.then(() => 'done' as const), ended]);
      if (how !== 'done') {
        // The code may still be awaiting something: it finds its invocation killed at its next call.
        invocation.killed = true;
        run.catch(() => {});
        environmentLives = false;
        if (how === 'timeout') this.timedOut++;
        else this.killed++;
        this.failed++;
      }
    } catch {
      this.failed++;
    } finally {
      this.running--;
      if (pooled) this.options.account.unreservedRunning--;
      this.busyMs += this.vt.now - startedAt;
      if (environmentLives) this.idle.push(this.vt.now);
    }
  }

  /** Events that ended in the on-failure destination: dropped when too old, or failed. */
  get onFailure(): number {
    return this.dropped + this.failed;
  }
}
