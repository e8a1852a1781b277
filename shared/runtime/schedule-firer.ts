import { errorMessage } from '../jobs/errors.js';
import type { JobTypeMap } from '../jobs/registry.js';
import type { JobTracker } from '../jobs/tracker.js';
import { type RecurringSchedule, ticksToFire } from '../schedules/definitions.js';
import { fireTicks } from '../schedules/fire.js';
import type { Logger } from './logger.js';

/**
 * Fires recurring schedules: every `intervalMs`, each schedule's latest tick is enqueued once, and for a
 * schedule with a backfill window every tick of the window too, oldest first (after downtime: at start).
 * A tick's job carries the idempotency key `schedule:<name>@<tick>`, so several processes (or a late
 * check) firing the same tick enqueue it once; backfilled ticks are also recorded (`schedule_ticks`), so
 * they stay enqueued once after retention deletes their jobs. The firer only remembers the newest tick it
 * sent per schedule, to skip the statement.
 */
export class ScheduleFirer<M extends JobTypeMap, S> {
  private readonly lastTicks = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly options: {
      tracker: JobTracker<M, S>;
      schedules: readonly RecurringSchedule[];
      intervalMs: number;
      logger: Logger;
    },
  ) {}

  /** Fires what is due now, then checks every interval. */
  async start(): Promise<void> {
    await this.fire();
    if (!this.stopped && this.options.schedules.length > 0)
      this.timer = setInterval(() => void this.fire(), this.options.intervalMs);
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  /** Enqueues each schedule's latest tick once (the tick's idempotency key makes repeats no-ops). */
  async fire(): Promise<void> {
    const { schedules, tracker, logger } = this.options;
    if (schedules.length === 0 || this.stopped) return;
    const now = tracker.clock.now() ?? new Date();
    const due = schedules.flatMap((schedule) => {
      const sent = this.lastTicks.get(schedule.name) ?? Number.NEGATIVE_INFINITY;
      return ticksToFire(schedule, now)
        .filter((tick) => tick.getTime() > sent)
        .map((tick) => ({ schedule, tick }));
    });
    if (due.length === 0) return;
    try {
      const results = await fireTicks(tracker, due);
      due.forEach(({ schedule, tick }, i) => {
        const sent = this.lastTicks.get(schedule.name) ?? Number.NEGATIVE_INFINITY;
        this.lastTicks.set(schedule.name, Math.max(tick.getTime(), sent));
        if (results[i]?.created) logger.info('schedule fired', { schedule: schedule.name, tick });
      });
    } catch (err) {
      logger.error('firing schedules failed', { error: errorMessage(err) });
    }
  }
}
