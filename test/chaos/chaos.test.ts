import { expect, test } from 'vitest';
import { adminUrl } from '../support/database.js';
import { runChaos } from './harness.js';

/**
 * The fault-injection run at a small size (`npm run chaos` runs it big): executors that throw, hang past
 * their lease and crash between work and report; duplicate, out-of-order and stale deliveries; a
 * fetch-ready that dies after claiming, partial publish failures; connections killed mid-statement;
 * clock jumps; follow-up jobs enqueued by running jobs (in a worker, eagerly started); beside the keyed type, a
 * type limited by its concurrency alone, then a window of it alone. Every invariant must hold.
 */
test('no job is lost, stuck, or run twice under injected faults', { timeout: 240_000 }, async () => {
  const seed = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const log: string[] = [];
  const report = await runChaos({
    adminUrl: adminUrl(),
    seed,
    jobs: 150,
    workers: 2,
    lambdas: 2,
    faultSeconds: 4,
    log: (line) => log.push(line),
  });
  console.log(`chaos (replay with CHAOS_SEED=${seed}): ${JSON.stringify(report)}`);
  // A violation's diagnosis (an overlap's job history, say) is only in the log: the database is dropped.
  if (Object.values(report.violations).some((n) => n > 0)) console.log(log.join('\n'));
  expect(report.violations).toEqual({
    jobs_not_final: 0,
    attempts_over_max: 0,
    attempts_without_one_closed_execution: 0,
    completed_without_effect: 0,
    effect_applied_twice: 0,
    interest_accrued_twice: 0,
    disbursal_executed_twice: 0,
    approval_not_concluded: 0,
    follow_up_missing: 0,
    accrual_day_missing: 0,
    retry_before_backoff: 0,
    attempts_running_concurrently: 0,
    key_limit_exceeded: 0,
    type_limit_exceeded: 0,
    limited_type_limit_exceeded: 0,
    claimed_while_paused: 0,
  });
  for (const kind of [
    'executor_throws',
    'executor_hangs_past_lease',
    'crash_between_work_and_report',
    'clock_jump',
    'type_paused',
  ]) {
    expect(report.faults[kind] ?? 0, kind).toBeGreaterThan(0);
  }
  expect(report.followUps).toBeGreaterThan(0);
  // The deployed executor loop (shared/aws) ran its share of the attempts, under the same faults.
  expect(report.executorRuns).toBeGreaterThan(0);
  // The paths only a type limited by its concurrency alone takes ran under the faults: a worker's claim
  // within the slots it holds, and on AWS a job claimed behind the running one. (How many of those were
  // handed the slot is reported, not held to a floor: at this size the executors now and then run too few
  // jobs, behind the circuit breaker and the workers' holds, for one to reach its turn.)
  expect(report.limitedPaths.claimsWithinHolds, 'claims within holds').toBeGreaterThan(0);
  expect(report.limitedPaths.jobsClaimedBehind, 'jobs claimed behind').toBeGreaterThan(0);
  expect((report.outcomes.completed ?? 0) + (report.outcomes.failed ?? 0)).toBe(
    150 + report.followUps + report.limitedJobs,
  );
});
