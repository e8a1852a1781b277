import type { EnqueueResult, JobTracker, ScheduleTickJob } from '../jobs/tracker.js';
import { jobForTick, type RecurringSchedule } from './definitions.js';

/** A schedule's tick to enqueue. */
export interface DueTick {
  schedule: RecurringSchedule;
  tick: Date;
}

/**
 * Enqueues ticks' jobs, for the local firer and the AWS schedule function alike: those of schedules
 * without a backfill window in one statement, guarded by their job keys as always; those with one through
 * `enqueueScheduleTicks`, which also records each tick so it is enqueued once even after its job is gone.
 * Results in input order; null for a backfilled tick already recorded (its job was enqueued before).
 * Ticks given oldest first are enqueued, and so claimed, oldest first.
 */
export async function fireTicks(
  tracker: Pick<JobTracker, 'enqueueUntyped' | 'enqueueScheduleTicks'>,
  due: readonly DueTick[],
): Promise<(EnqueueResult | null)[]> {
  const plain = due.flatMap((d, i) => (d.schedule.backfill === undefined ? [i] : []));
  const recorded = due.flatMap((d, i) => (d.schedule.backfill === undefined ? [] : [i]));
  const results: (EnqueueResult | null)[] = new Array(due.length).fill(null);
  const plainResults = await tracker.enqueueUntyped(
    plain.map((i) => jobForTick(due[i]!.schedule, due[i]!.tick)),
  );
  plain.forEach((i, k) => {
    results[i] = plainResults[k]!;
  });
  const ticks: ScheduleTickJob[] = recorded.map((i) => ({
    schedule: due[i]!.schedule.name,
    tick: due[i]!.tick,
    job: jobForTick(due[i]!.schedule, due[i]!.tick),
  }));
  const recordedResults = await tracker.enqueueScheduleTicks(ticks);
  recorded.forEach((i, k) => {
    results[i] = recordedResults[k] ?? null;
  });
  return results;
}
