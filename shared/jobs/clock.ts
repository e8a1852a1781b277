/**
 * Where "now" comes from. In production it is the database's clock (`now()`), so every Lambda and worker
 * agrees on due times and leases whatever their own clocks say. Tests inject a manual clock and walk a job
 * through hours of retry schedule in milliseconds.
 */
export interface Clock {
  /** The current time, or `null` to use the database's `now()`. */
  now(): Date | null;
}

export const databaseClock: Clock = { now: () => null };

export class ManualClock implements Clock {
  private current: Date;
  constructor(start: Date | string = '2026-01-01T00:00:00Z') {
    this.current = new Date(start);
  }
  now(): Date {
    return new Date(this.current);
  }
  set(at: Date | string): void {
    this.current = new Date(at);
  }
  advance(ms: number): void {
    this.current = new Date(this.current.getTime() + ms);
  }
  advanceMinutes(minutes: number): void {
    this.advance(minutes * 60_000);
  }
}
