import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { SLOT_LEASE_SECONDS } from '../../shared/jobs/attempts.js';
import { TypeSlots } from '../../shared/runtime/type-slots.js';

/**
 * What a worker tells its claim of the slots it holds (`TypeSlots.forClaim`): a claim settles the holds
 * (renews them, gives up what is not kept) only when that would change something or the holds are due
 * for confirmation, and only a settling claim extends how long the worker trusts them.
 */
describe('TypeSlots.forClaim', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['performance'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  const confirmed = () => {
    const slots = new TypeSlots(new Set(['alpha', 'beta']), 1000);
    slots.update({ alpha: 2 }, performance.now());
    return slots;
  };

  test('holding what it keeps, confirmed a moment ago: the claim leaves the holds alone', () => {
    const slots = confirmed();
    slots.queuedDelta('alpha', 2);
    expect(slots.forClaim()).toEqual({
      inHand: { alpha: 2 },
      lingering: [],
      settle: false,
      held: { alpha: 2 },
      withinHolds: true,
    });
    expect(slots.held.get('alpha')).toBe(2);
  });

  test('holding more than it keeps: the claim settles, and the worker counts on the kept ones only', () => {
    const slots = confirmed();
    slots.queuedDelta('alpha', 1);
    expect(slots.forClaim().settle).toBe(true);
    expect(slots.held.get('alpha')).toBe(1);
  });

  test('a quarter of the slot lease after the last confirmation: the claim settles', () => {
    const slots = confirmed();
    slots.queuedDelta('alpha', 2);
    vi.advanceTimersByTime((SLOT_LEASE_SECONDS * 1000) / 4 - 1);
    expect(slots.forClaim().settle).toBe(false);
    vi.advanceTimersByTime(1);
    expect(slots.forClaim().settle).toBe(true);
  });

  test('an answer to a claim that did not settle keeps the trust where the last settle left it', () => {
    const slots = confirmed();
    const at = slots.confirmedAt;
    vi.advanceTimersByTime(5000);
    slots.update({ alpha: 2, beta: 1 }, undefined);
    expect(slots.confirmedAt).toBe(at);
    expect(Object.fromEntries(slots.held)).toEqual({ alpha: 2, beta: 1 });
    slots.update({ alpha: 2, beta: 1 }, performance.now());
    expect(slots.confirmedAt).toBe(at + 5000);
  });

  test('the holds fall due for confirmation a quarter of the slot lease after the last one, claim or no claim', () => {
    const slots = confirmed();
    const quarter = (SLOT_LEASE_SECONDS * 1000) / 4;
    expect(slots.confirmDueInMs()).toBe(quarter);
    vi.advanceTimersByTime(quarter - 1000);
    slots.update({ alpha: 2 }, undefined); // a claim within holds answered: nothing renewed
    expect(slots.confirmDueInMs()).toBe(1000);
    vi.advanceTimersByTime(5000);
    expect(slots.confirmDueInMs()).toBe(0);
  });

  test('after a claim within holds that did not apply, full claims for a second, then a try again', () => {
    const slots = confirmed();
    slots.queuedDelta('alpha', 2);
    slots.missedWithinHolds();
    expect(slots.forClaim().withinHolds).toBe(false);
    vi.advanceTimersByTime(999);
    expect(slots.forClaim().withinHolds).toBe(false);
    vi.advanceTimersByTime(1);
    expect(slots.forClaim().withinHolds).toBe(true);
  });

  test('holding no slot, a claim goes straight to the full claim (which takes the slots)', () => {
    const slots = new TypeSlots(new Set(['alpha']), 1000);
    slots.update({}, performance.now());
    expect(slots.forClaim()).toMatchObject({ settle: false, withinHolds: false });
  });
});

/** The per-type counts a worker keeps of its jobs in hand, which the claims are told. */
describe('TypeSlots hand', () => {
  test("a claim's jobs count per limited type, whatever their order; other types are not counted", () => {
    const slots = new TypeSlots(new Set(['alpha', 'beta']), 1000);
    const jobs = ['alpha', 'alpha', 'free', 'beta', 'alpha', 'free', 'beta'].map((jobType) => ({ jobType }));
    slots.queuedJobs(jobs);
    expect(slots.hand()).toEqual({ inHand: { alpha: 3, beta: 2 }, lingering: [] });
    expect(slots.inHand('free')).toBe(0);
    expect(slots.isLimited('free')).toBe(false);
  });

  test('a job moves from queued to running and out; its type lingers a moment after the last one', () => {
    vi.useFakeTimers({ toFake: ['performance'] });
    try {
      const slots = new TypeSlots(new Set(['alpha']), 1000);
      slots.update({ alpha: 1 }, performance.now());
      slots.queuedJobs([{ jobType: 'alpha' }]);
      expect(slots.mayStart('alpha', performance.now())).toBe(true);
      slots.queuedDelta('alpha', -1);
      slots.runningDelta('alpha', 1);
      expect(slots.running('alpha')).toBe(1);
      expect(slots.mayStart('alpha', performance.now())).toBe(false);
      expect(slots.hasIdleSlot('alpha')).toBe(false);
      slots.runningDelta('alpha', -1);
      expect(slots.hand()).toEqual({ inHand: {}, lingering: ['alpha'] });
      expect(slots.hasIdleSlot('alpha')).toBe(true);
      vi.advanceTimersByTime(1000);
      expect(slots.hand()).toEqual({ inHand: {}, lingering: [] });
    } finally {
      vi.useRealTimers();
    }
  });
});
