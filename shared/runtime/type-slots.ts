import { SLOT_LEASE_SECONDS } from '../jobs/attempts.js';

/** How long a limited type's slots stay held after its last job here: an enqueue soon after starts at once. */
export const DEFAULT_SLOT_LINGER_MS = 1000;

/** The payload of the notification a worker's given-up slots send (`lana_jobs_settle_worker_slots`, 0020). */
export const slotsGivenUpBy = (worker: string) => `slots-given-up-by:${worker}`;
/**
 * A worker starts a limited type's job only while its hold on the slots was confirmed this recently: a
 * claim or settle renews a kept slot only once less than three quarters of its lease is left (migration
 * 0022), so a confirmed hold has at least that much left.
 */
const SLOT_TRUST_MS = (SLOT_LEASE_SECONDS * 0.75 - 15) * 1000;
/**
 * How long after a confirmation a claim may leave the holds as they are (`settle: false`, migration 0025):
 * the next claim after that settles them, or the worker's heartbeat if it claims nothing (`confirmDueInMs`),
 * well within the trust above.
 */
const SLOT_CONFIRM_MS = (SLOT_LEASE_SECONDS * 1000) / 4;
/**
 * After a claim within holds that did not apply (a keyed, rate-limited or paused type had jobs due), the
 * worker makes full claims for this long before it tries again: while such jobs stay due, a try per claim
 * would be a statement for nothing.
 */
const WITHIN_HOLDS_RETRY_MS = 1000;

/**
 * What a worker holds of the types with a concurrency limit: the slots the database granted it (it runs at
 * most that many of a type's jobs at once, across every process), and its jobs of each type in hand
 * (running, queued, parked or promised to an eager start), which is what it keeps slots for.
 */
export class TypeSlots {
  readonly held = new Map<string, number>();
  readonly running = new Map<string, number>();
  /** Queued (including parked) jobs per type. */
  readonly queued = new Map<string, number>();
  readonly reserved = new Map<string, number>();
  /** When a type's last job here finished (monotonic ms): its slots linger a moment for the next one. */
  private readonly lastActive = new Map<string, number>();
  /** Monotonic time at which the database last confirmed the holds (a claim or a settle began). */
  confirmedAt = 0;
  /** When a claim within holds last did not apply (monotonic ms). */
  private withinHoldsMissedAt = Number.NEGATIVE_INFINITY;

  constructor(
    readonly limited: ReadonlySet<string>,
    private readonly lingerMs: number,
  ) {}

  private add(map: Map<string, number>, type: string, n: number): void {
    const v = (map.get(type) ?? 0) + n;
    if (v === 0) map.delete(type);
    else map.set(type, v);
  }

  isLimited(type: string): boolean {
    return this.limited.has(type);
  }

  inHand(type: string): number {
    return (this.running.get(type) ?? 0) + (this.queued.get(type) ?? 0) + (this.reserved.get(type) ?? 0);
  }

  /** A slot of `type` this worker holds and no job of it uses (running or promised). */
  hasIdleSlot(type: string): boolean {
    return (
      this.trusted() &&
      (this.held.get(type) ?? 0) > (this.running.get(type) ?? 0) + (this.reserved.get(type) ?? 0)
    );
  }

  trusted(): boolean {
    return performance.now() - this.confirmedAt < SLOT_TRUST_MS;
  }

  queuedDelta(type: string, n: number): void {
    if (this.limited.has(type)) this.add(this.queued, type, n);
  }

  runningDelta(type: string, n: number): void {
    if (!this.limited.has(type)) return;
    this.add(this.running, type, n);
    if (n < 0) this.lastActive.set(type, performance.now());
  }

  reservedDelta(type: string, n: number): void {
    this.add(this.reserved, type, n);
  }

  /**
   * Per type, the slots worth keeping: its jobs in hand, or one while it was active a moment ago (so the
   * next enqueue of it starts at once). What a claim or a settle is told to keep.
   */
  keep(): Record<string, number> {
    return keptFor(this.hand());
  }

  /**
   * What a claim is told of the worker's hand (`WorkerSlots`): per type, its jobs in hand, and the types
   * with none in hand whose slots linger (kept, one each, but no job to count on: the claim takes no slot
   * for them).
   */
  hand(): { inHand: Record<string, number>; lingering: string[] } {
    const inHand: Record<string, number> = {};
    const lingering: string[] = [];
    const now = performance.now();
    for (const type of this.limited) {
      const n = this.inHand(type);
      if (n > 0) inHand[type] = n;
      else if (now - (this.lastActive.get(type) ?? -Infinity) < this.lingerMs) lingering.push(type);
    }
    return { inHand, lingering };
  }

  /**
   * What the next claim is told (`WorkerSlots`): the hand, and whether it settles the holds. It settles
   * when the worker holds more than it keeps or its holds were last confirmed `SLOT_CONFIRM_MS` ago;
   * otherwise the claim only claims (and takes slots it needs), leaving the holds and their trust as they
   * are.
   */
  forClaim(): ReturnType<TypeSlots['hand']> & {
    settle: boolean;
    held?: Record<string, number>;
    withinHolds?: boolean;
  } {
    const hand = this.hand();
    const keep = keptFor(hand);
    const now = performance.now();
    const settle = now - this.confirmedAt >= SLOT_CONFIRM_MS || this.holdsBeyond(keep);
    if (!settle) {
      // Holding no slot, any limited type due needs the full claim to take one.
      const withinHolds = this.held.size > 0 && now - this.withinHoldsMissedAt >= WITHIN_HOLDS_RETRY_MS;
      return { ...hand, settle, held: Object.fromEntries(this.held), withinHolds };
    }
    this.capHeld(keep);
    return { ...hand, settle };
  }

  /** A claim within holds did not apply: full claims for a moment (`WITHIN_HOLDS_RETRY_MS`). */
  missedWithinHolds(): void {
    this.withinHoldsMissedAt = performance.now();
  }

  /**
   * While a statement that settles the holds to `keep` is in flight, the worker counts on no more than
   * that: the database gives up the rest, and a job started meanwhile must not use a slot being given up.
   */
  capHeld(keep: Record<string, number>): void {
    for (const [type, n] of this.held) {
      const k = keep[type] ?? 0;
      if (n > k) {
        if (k > 0) this.held.set(type, k);
        else this.held.delete(type);
      }
    }
  }

  /**
   * The holds as the database answered them; confirmed as of `at` (when the statement began) if it settled
   * them (a claim that did not settle renewed nothing: the trust stays as the last settle left it).
   */
  update(held: Record<string, number>, at: number | undefined): void {
    this.held.clear();
    for (const [type, n] of Object.entries(held)) if (n > 0) this.held.set(type, n);
    if (at !== undefined) this.confirmedAt = at;
  }

  /** Milliseconds until the holds are due for confirmation (a settle renews them and confirms them). */
  confirmDueInMs(): number {
    return Math.max(0, this.confirmedAt + SLOT_CONFIRM_MS - performance.now());
  }

  /** Milliseconds until the linger of a held type with nothing in hand ends (undefined: none lingers). */
  lingerEndsInMs(): number | undefined {
    let soonest: number | undefined;
    const now = performance.now();
    for (const type of this.held.keys()) {
      if (this.inHand(type) > 0) continue;
      const left = (this.lastActive.get(type) ?? -Infinity) + this.lingerMs - now;
      soonest = Math.min(soonest ?? Number.POSITIVE_INFINITY, Math.max(0, left));
    }
    return soonest;
  }

  /** Slots held beyond what is worth keeping (a settle would give some up). */
  holdsMoreThanKept(): boolean {
    return this.holdsBeyond(this.keep());
  }

  private holdsBeyond(keep: Record<string, number>): boolean {
    for (const [type, n] of this.held) if (n > (keep[type] ?? 0)) return true;
    return false;
  }
}

/** The slots worth keeping for a worker's hand: one per job in hand, one per type whose slot lingers. */
export function keptFor(hand: { inHand: Record<string, number>; lingering: readonly string[] }) {
  const keep: Record<string, number> = { ...hand.inHand };
  for (const type of hand.lingering) keep[type] = 1;
  return keep;
}
