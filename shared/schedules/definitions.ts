import { previousUtcDay } from '../job-types/index.js';
import type { UntypedNewJob } from '../jobs/tracker.js';
import type { ScheduleExpression } from './cron.js';

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
}

export const schedules: readonly RecurringSchedule[] = [
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
];

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
