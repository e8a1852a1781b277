import { previousUtcDay } from '../job-types/index.js';
import type { UntypedNewJob } from '../jobs/tracker.js';
import { latestTick, type ScheduleExpression, ticksBetween } from './cron.js';

/**
 * Recurring schedules: each tick enqueues one job. The local runtime fires them itself; the CDK stack
 * turns each into an EventBridge rule invoking the `schedule` function. Both use this one list.
 */
export interface RecurringSchedule {
  /** Stable name; part of each tick's idempotency key. */
  name: string;
  description: string;
  expression: ScheduleExpression;
  /** The job a tick at `tick` enqueues. */
  job(tick: Date): Omit<UntypedNewJob, 'idempotencyKey'>;
  /**
   * A backfill window (`90m`, `6h`, `3d`; at most `7d`): after downtime, each tick missed within the
   * window before now is enqueued once, oldest first, besides the latest. Without it a schedule's missed
   * ticks are skipped and only its latest tick runs, late. A tick is missed only after one that fired: a
   * schedule's first tick ever fills nothing. Cron schedules only: EventBridge's `rate()` ticks count
   * from when the rule was made, so a missed one cannot be named.
   */
  backfill?: string;
}

/** A schedule definition that cannot be used: refused when the list is built (at start-up, at synth). */
export class ScheduleDefinitionError extends Error {
  override readonly name = 'ScheduleDefinitionError';
}

const MINUTE_MS = 60_000;
const BACKFILL_UNITS: Record<string, number> = { m: MINUTE_MS, h: 60 * MINUTE_MS, d: 24 * 60 * MINUTE_MS };
/** The longest backfill window: a week of ticks is what a backfill is for; a longer outage needs a person. */
export const MAX_BACKFILL_MS = 7 * BACKFILL_UNITS.d!;
/** At most this many ticks are backfilled at once (the newest of the window), one enqueue statement. */
export const MAX_BACKFILL_TICKS = 1000;

/** A backfill window in milliseconds, or a clear error naming the schedule. */
export function parseBackfillWindow(scheduleName: string, text: unknown): number {
  const m = typeof text === 'string' ? /^(\d{1,6})(m|h|d)$/.exec(text) : null;
  const ms = m ? Number(m[1]) * BACKFILL_UNITS[m[2]!]! : Number.NaN;
  if (!m || ms < MINUTE_MS || ms > MAX_BACKFILL_MS) {
    throw new ScheduleDefinitionError(
      `schedule ${scheduleName}: backfill ${JSON.stringify(text)} is not a window from 1m to 7d (write e.g. 90m, 6h, 3d)`,
    );
  }
  return ms;
}

/** Checks each schedule's backfill (and names) as the list is built, so a bad one stops start-up. */
export function defineSchedules(list: readonly RecurringSchedule[]): readonly RecurringSchedule[] {
  const names = new Set<string>();
  for (const s of list) {
    if (names.has(s.name)) throw new ScheduleDefinitionError(`schedule ${s.name} is defined twice`);
    names.add(s.name);
    if (s.backfill === undefined) continue;
    parseBackfillWindow(s.name, s.backfill);
    if (s.expression.kind !== 'cron') {
      throw new ScheduleDefinitionError(
        `schedule ${s.name}: backfill needs a cron expression (a rate's ticks on EventBridge count from when the rule was made, so a missed one cannot be named)`,
      );
    }
  }
  return list;
}

/**
 * The ticks to enqueue at `now`, oldest first: the latest tick (even if older than the window: it runs
 * late rather than never) and, with a backfill window, every tick within the window before now.
 */
export function ticksToFire(schedule: RecurringSchedule, now: Date): Date[] {
  const latest = latestTick(schedule.expression, now);
  if (schedule.backfill === undefined) return latest ? [latest] : [];
  const windowMs = parseBackfillWindow(schedule.name, schedule.backfill);
  const ticks = ticksBetween(
    schedule.expression,
    new Date(now.getTime() - windowMs),
    now,
    MAX_BACKFILL_TICKS,
  );
  if (latest && !ticks.some((t) => t.getTime() === latest.getTime())) ticks.push(latest);
  return ticks;
}

export const schedules: readonly RecurringSchedule[] = defineSchedules([
  {
    name: 'interest-accrual-daily',
    description: 'At midnight UTC, accrue interest for the day that just ended',
    expression: { kind: 'cron', minute: '0', hour: '0' },
    job: (tick) => ({ type: 'interest-accrual', payload: { date: previousUtcDay(tick) } }),
  },
  {
    name: 'payment-reminders-daily',
    description: 'At 08:00 UTC, enqueue reminders for payments due in three days',
    expression: { kind: 'cron', minute: '0', hour: '8' },
    job: (tick) => ({ type: 'payment-reminders', payload: { date: tick.toISOString().slice(0, 10) } }),
    // A day's sweep reminds of obligations due from that day to three days ahead that have no reminder
    // yet: after an outage of more than a day, the missed days' sweeps still remind of the obligations
    // that fell due during it (late, and not at all once paid) before they go overdue. See
    // docs/flow-control.md#schedule-backfill for why the other schedules do not backfill.
    backfill: '3d',
  },
  {
    name: 'job-retention-hourly',
    description: 'Every hour, delete completed and cancelled jobs older than the retention period',
    expression: { kind: 'cron', minute: '17', hour: '*' },
    job: () => ({ type: 'maintenance', payload: { task: 'prune' } }),
  },
  {
    name: 'approval-expiry',
    description: "Every 10 minutes, expire open approval processes past their policy's time",
    expression: { kind: 'rate', minutes: 10 },
    job: () => ({ type: 'approval-processing', payload: { sweep: 'expire' } }),
  },
  {
    name: 'portfolio-valuation',
    description: 'Every 5 minutes, revalue collateral from the BTC/USD price',
    expression: { kind: 'rate', minutes: 5 },
    job: () => ({ type: 'sync', payload: { target: 'portfolio-valuation' } }),
  },
]);

/**
 * The idempotency key of a tick: a duplicate or late delivery of the same tick enqueues nothing new.
 * Ticks are truncated to the minute (EventBridge fires "within the minute").
 */
export function tickKey(schedule: RecurringSchedule, tick: Date): string {
  const minute = new Date(Math.floor(tick.getTime() / 60_000) * 60_000);
  return `schedule:${schedule.name}@${minute.toISOString()}`;
}

/** The job for a tick, with its idempotency key. */
export function jobForTick(schedule: RecurringSchedule, tick: Date): UntypedNewJob {
  const minute = new Date(Math.floor(tick.getTime() / 60_000) * 60_000);
  return { ...schedule.job(minute), idempotencyKey: tickKey(schedule, minute) };
}

export function findSchedule(name: string): RecurringSchedule | undefined {
  return schedules.find((s) => s.name === name);
}
