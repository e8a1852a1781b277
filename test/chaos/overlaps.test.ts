import { describe, expect, test } from 'vitest';
import { classifyKeyOverruns, classifyOverlaps, classifyTypeOverruns, type Run } from './harness.js';

const LEASE_MS = 122_000;
const run = (attempt: number, start: number, end: number, claimedAt: number): Run => ({
  jobId: 'job',
  attempt,
  start,
  end,
  leaseExpiresAt: claimedAt + LEASE_MS,
});

describe('chaos: overlapping attempts of one job', () => {
  test('are a violation when the later attempt was claimed inside the earlier one’s lease', () => {
    const result = classifyOverlaps([run(1, 0, 100, 1_000), run(2, 50, 150, 60_000)], LEASE_MS);
    expect(result.overlapping).toHaveLength(1);
    expect(result.overlapsCausedByClockJumps).toBe(0);
  });

  test('are put down to a clock jump when the later attempt was claimed after that lease expired', () => {
    const result = classifyOverlaps([run(1, 0, 100, 1_000), run(2, 50, 150, 1_000 + LEASE_MS)], LEASE_MS);
    expect(result).toEqual({ overlapping: [], overlapsCausedByClockJumps: 1 });
  });

  test('are paired by attempt number, not start: an earlier attempt started late from a queue (seen in CI)', () => {
    // Attempt 1 waited in a worker's queue while two clock jumps expired its lease and attempt 2 was
    // claimed and started; attempt 1 then started 100 ms after attempt 2 (figures from the failing run).
    const first = run(1, 3482.97, 3493.06, 1_795_945_117_873 - LEASE_MS);
    const second = run(2, 3379.92, 5380.52, 1_795_946_319_765 - LEASE_MS);
    expect(classifyOverlaps([second, first], LEASE_MS)).toEqual({
      overlapping: [],
      overlapsCausedByClockJumps: 1,
    });
  });

  test('ignore runs that did not overlap, one attempt delivered twice, and other jobs', () => {
    const other = { ...run(2, 10, 20, 1_000), jobId: 'other' };
    const result = classifyOverlaps(
      [run(1, 0, 100, 1_000), run(2, 100, 200, 2_000), run(2, 150, 160, 2_000), other],
      LEASE_MS,
    );
    expect(result).toEqual({ overlapping: [], overlapsCausedByClockJumps: 0 });
  });

  test('count a run that never ended (its process was killed) as running from its start on', () => {
    const result = classifyOverlaps(
      [run(1, 0, Number.POSITIVE_INFINITY, 1_000), run(2, 500, 600, 2_000)],
      LEASE_MS,
    );
    expect(result.overlapping).toHaveLength(1);
  });
});

describe('chaos: runs of one key beyond its limit', () => {
  const keyed = (jobId: string, start: number, end: number, claimedAt: number, key = 'lane-0'): Run => ({
    jobId,
    attempt: 1,
    start,
    end,
    leaseExpiresAt: claimedAt + LEASE_MS,
    key,
  });

  test('are a violation when the key’s limit of other jobs ran, their leases live, as one began', () => {
    const runs = [keyed('a', 0, 100, 0), keyed('b', 50, 150, 40)];
    expect(classifyKeyOverruns(runs, LEASE_MS, 1).overruns).toHaveLength(1);
    // Two at once is within a limit of two; a third is not.
    expect(classifyKeyOverruns(runs, LEASE_MS, 2).overruns).toHaveLength(0);
    const third = [...runs, keyed('c', 60, 70, 55)];
    expect(classifyKeyOverruns(third, LEASE_MS, 2).overruns).toHaveLength(1);
  });

  test('are put down to a clock jump when a run’s lease had expired before the next was claimed', () => {
    const runs = [keyed('a', 0, 100, 0), keyed('b', 50, 150, LEASE_MS)];
    expect(classifyKeyOverruns(runs, LEASE_MS, 1)).toEqual({ overruns: [], overrunsCausedByClockJumps: 1 });
  });

  test('are judged by claim order: a job claimed first that starts late, its lease expired (seen in chaos)', () => {
    // Job a was claimed by a worker and waited in its queue while a clock jump expired its lease; b, of its
    // key, was then claimed (a no longer counted) and began; a began after it (figures from the run).
    const a = keyed('a', 6875.92, 6880.01, 1_796_640_554_737);
    const b = keyed('b', 5710.88, 7711.66, 1_796_641_155_625);
    expect(classifyKeyOverruns([a, b], LEASE_MS, 1)).toEqual({ overruns: [], overrunsCausedByClockJumps: 1 });
    // Claimed inside a's lease, b would have been over the limit, whichever began first.
    const early = keyed('b', 5710.88, 7711.66, 1_796_640_554_737 + 1_000);
    expect(classifyKeyOverruns([a, early], LEASE_MS, 1).overruns).toHaveLength(1);
  });

  test('take the claim time read from the execution row over the one derived from the lease', () => {
    // A next job's dispatch lease is shorter than the run's: derived, its claim would look earlier.
    const runs = [keyed('a', 0, 100, 0), { ...keyed('b', 50, 150, LEASE_MS - 30_000), claimedAt: LEASE_MS }];
    expect(classifyKeyOverruns(runs, LEASE_MS, 1)).toEqual({ overruns: [], overrunsCausedByClockJumps: 1 });
  });

  test('ignore runs one after another, other keys, unkeyed runs and two attempts of one job', () => {
    const runs = [
      keyed('a', 0, 100, 0),
      keyed('b', 100, 200, 90),
      keyed('c', 50, 150, 40, 'lane-1'),
      { ...keyed('d', 50, 150, 40), key: undefined },
      { ...keyed('a', 60, 90, 50), attempt: 2 },
    ];
    expect(classifyKeyOverruns(runs, LEASE_MS, 1)).toEqual({ overruns: [], overrunsCausedByClockJumps: 0 });
  });
});

describe('chaos: runs of one type beyond its concurrency limit', () => {
  // Runs start at real time `start`, which is also the database's clock here (no jump in between).
  const typed = (jobId: string, start: number, end: number, holdEnds: number, type = 'limited'): Run => ({
    jobId,
    type,
    attempt: 1,
    start,
    end,
    startedOnDbClock: start,
    leaseExpiresAt: holdEnds,
  });

  test('are a violation when the limit’s worth of the type’s other jobs ran on live holds, keyed or not', () => {
    const runs = [
      typed('a', 0, 100, 1_000),
      { ...typed('b', 10, 100, 1_000), key: 'lane-0' },
      typed('c', 20, 100, 1_000),
      typed('d', 30, 100, 1_000, 'other'),
    ];
    expect(classifyTypeOverruns(runs, 'limited', 2).overruns).toHaveLength(1);
    expect(classifyTypeOverruns(runs, 'limited', 3).overruns).toHaveLength(0);
    expect(classifyTypeOverruns(runs, 'other', 1).overruns).toHaveLength(0);
  });

  test('read a local worker’s run by its worker’s hold on the slots, not its job’s lease', () => {
    // The worker's hold had lapsed (a jump) when b began, though a's job lease had not.
    const lapsed = [{ ...typed('a', 0, 100, 1_000), holdExpiresAt: 40 }, typed('b', 50, 150, 1_000)];
    expect(classifyTypeOverruns(lapsed, 'limited', 1)).toEqual({
      overruns: [],
      overrunsCausedByClockJumps: 1,
    });
    // Still held: a violation, whichever of the two began first.
    const held = [{ ...typed('a', 0, 100, 60), holdExpiresAt: 1_000 }, typed('b', 50, 150, 1_000)];
    expect(classifyTypeOverruns(held, 'limited', 1).overruns).toHaveLength(1);
  });

  test('put a run down to a clock jump when its own hold had lapsed as it began (it waited in a queue)', () => {
    const runs = [typed('a', 0, 100, 1_000), { ...typed('b', 50, 150, 1_000), holdExpiresAt: 45 }];
    expect(classifyTypeOverruns(runs, 'limited', 1)).toEqual({ overruns: [], overrunsCausedByClockJumps: 1 });
  });
});
