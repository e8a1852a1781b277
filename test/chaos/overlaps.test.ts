import { describe, expect, test } from 'vitest';
import { classifyKeyOverruns, classifyOverlaps, type Run } from './harness.js';

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
