import { errorMessage } from '../jobs/errors.js';
import type { JobTypeMap } from '../jobs/registry.js';
import type { JobTracker } from '../jobs/tracker.js';
import type { Logger } from './logger.js';

/**
 * The rescuer: every `intervalMs`, running jobs whose lease expired (their worker or executor is gone) go
 * back under the retry rule, or, if no executor began them, back to the queue uncounted. Any number of
 * processes may run one: each rescue statement skips the rows another holds.
 */
export class LeaseRescuer<M extends JobTypeMap, S> {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly options: {
      tracker: JobTracker<M, S>;
      intervalMs: number;
      logger: Logger;
      /** Jobs were rescued: they may be due now. */
      onRescued: () => void;
    },
  ) {}

  /** Rescues once now, then every interval. */
  async start(): Promise<void> {
    await this.rescue();
    if (!this.stopped) this.timer = setInterval(() => void this.rescue(), this.options.intervalMs);
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  private async rescue(): Promise<void> {
    if (this.stopped) return;
    try {
      const rescued = await this.options.tracker.rescueExpiredLeases();
      if (rescued.length > 0) {
        this.options.logger.warn('rescued jobs whose lease expired', { count: rescued.length });
        this.options.onRescued();
      }
    } catch (err) {
      this.options.logger.error('lease rescue failed', { error: errorMessage(err) });
    }
  }
}
