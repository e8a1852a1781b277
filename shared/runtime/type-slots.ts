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
  /**
   * Per limited type, its jobs here: running, queued (including parked) and promised to an eager start,
   * and when its last job here finished (monotonic ms: its slots linger a moment for the next one). One
   * record per type, looked up once per change: these counts move with every job.
   */
  private readonly hands = new Map<string, TypeHand>();
  /** Monotonic time at which the database last confirmed the holds (a claim or a settle began). */
  confirmedAt = 0;
  /** When a claim within holds last did not apply (monotonic ms). */
  private withinHoldsMissedAt = Number.NEGATIVE_INFINITY;

  constructor(
    readonly limited: ReadonlySet<string>,
    private readonly lingerMs: number,
  ) {
    for (const type of limited)
      this.hands.set(type, { running: 0, queued: 0, reserved: 0, lastActive: Number.NEGATIVE_INFINITY });
  }

  isLimited(type: string): boolean {
    return this.hands.has(type);
  }

  inHand(type: string): number {
    const h = this.hands.get(type);
    return h ? h.running + h.queued + h.reserved : 0;
  }

  /** Jobs of `type` running here. */
  running(type: string): number {
    return this.hands.get(type)?.running ?? 0;
  }

  /** A slot of `type` this worker holds and no job of it uses (running or promised). */
  hasIdleSlot(type: string): boolean {
    const h = this.hands.get(type);
    return this.trusted() && h !== undefined && (this.held.get(type) ?? 0) > h.running + h.reserved;
  }

  /**
   * Whether a job of `type` may start now: its hold on the slots is trusted at `now` (monotonic ms) and a
   * slot it holds is free of running jobs.
   */
  mayStart(type: string, now: number): boolean {
    return this.trustedAt(now) && this.running(type) < (this.held.get(type) ?? 0);
  }

  trusted(): boolean {
    return this.trustedAt(performance.now());
  }

  private trustedAt(now: number): boolean {
    return now - this.confirmedAt < SLOT_TRUST_MS;
  }

  queuedDelta(type: string, n: number): void {
    const h = this.hands.get(type);
    if (h) h.queued += n;
  }

  /** Claimed jobs joined the local queue: counted per type at once (a claim brings hundreds). */
  queuedJobs(jobs: readonly { jobType: string }[]): void {
    let type: string | undefined;
    let n = 0;
    for (const job of jobs) {
      if (job.jobType !== type) {
        if (type !== undefined) this.queuedDelta(type, n);
        type = job.jobType;
        n = 0;
      }
      n++;
    }
    if (type !== undefined) this.queuedDelta(type, n);
  }

  runningDelta(type: string, n: number): void {
    const h = this.hands.get(type);
    if (!h) return;
    h.running += n;
    if (n < 0) h.lastActive = performance.now();
  }

  reservedDelta(type: string, n: number): void {
    const h = this.hands.get(type);
    if (h) h.reserved += n;
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
    for (const [type, h] of this.hands) {
      const n = h.running + h.queued + h.reserved;
      if (n > 0) inHand[type] = n;
      else if (now - h.lastActive < this.lingerMs) lingering.push(type);
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

  /**
   * An eager start's insert took a slot of `type` for this worker. Its hold on the others is not
   * confirmed by it: the trust stays where the last settle left it.
   */
  tookSlot(type: string): void {
    this.held.set(type, (this.held.get(type) ?? 0) + 1);
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
      const left = (this.hands.get(type)?.lastActive ?? Number.NEGATIVE_INFINITY) + this.lingerMs - now;
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

/** A limited type's jobs at one worker (`TypeSlots`). */
interface TypeHand {
  running: number;
  queued: number;
  reserved: number;
  lastActive: number;
}
