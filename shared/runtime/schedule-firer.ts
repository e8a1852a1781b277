import { errorMessage } from '../jobs/errors.js';
import type { JobTypeMap } from '../jobs/registry.js';
import type { JobTracker } from '../jobs/tracker.js';
import { latestTick } from '../schedules/cron.js';
import { jobForTick, type RecurringSchedule } from '../schedules/definitions.js';
import type { Logger } from './logger.js';

/**
 * Fires recurring schedules: every `intervalMs`, each schedule's latest tick is enqueued once. A tick's
 * job carries the idempotency key `schedule:<name>@<tick>`, so several processes (or a late check) firing
 * the same tick enqueue it once; the firer only remembers which ticks it already sent, to skip the insert.
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
    const due = schedules.flatMap((s) => {
      const tick = latestTick(s.expression, now);
      if (!tick || this.lastTicks.get(s.name) === tick.getTime()) return [];
      return [{ s, tick }];
    });
    if (due.length === 0) return;
    try {
      const results = await tracker.enqueueUntyped(due.map(({ s, tick }) => jobForTick(s, tick)));
      due.forEach(({ s, tick }, i) => {
        this.lastTicks.set(s.name, tick.getTime());
        if (results[i]?.created) logger.info('schedule fired', { schedule: s.name, tick });
      });
    } catch (err) {
      logger.error('firing schedules failed', { error: errorMessage(err) });
    }
  }
}
