/** Callers waiting for something to change: `notify` resolves everyone waiting at that moment. */
export class Waiters {
  private list: (() => void)[] = [];

  get waiting(): boolean {
    return this.list.length > 0;
  }

  next(): Promise<void> {
    return new Promise((resolve) => this.list.push(resolve));
  }

  notify(): void {
    if (this.list.length === 0) return;
    const waiting = this.list;
    this.list = [];
    for (const resolve of waiting) resolve();
  }

  /** Waits, change by change, until `condition` holds. */
  async until(condition: () => boolean): Promise<void> {
    while (!condition()) await this.next();
  }
}

/** True if `promise` settles within `ms`. */
export function settlesWithin(promise: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  return Promise.race([promise.then(() => true), timeout]).finally(() => clearTimeout(timer));
}
