import type { Context } from 'aws-lambda';
import * as z from 'zod';
import type { FetchReadyWaker } from '../../shared/aws/waker.js';
import { findSchedule, jobForTick } from '../../shared/schedules/definitions.js';
import { createObservability, type Observability, withObservability } from '../lib/powertools.js';
import { type JobRuntime, runtimeFromEnv, wakerFromEnv } from '../lib/runtime.js';

/** The rule's input: the schedule's name and the scheduled time of this tick (EventBridge `<aws.events.event.time>`). */
export const scheduleTickSchema = z.object({
  schedule: z.string().min(1),
  time: z.iso.datetime(),
});

/**
 * Invoked by one EventBridge rule per recurring schedule. Enqueues the schedule's job with the idempotency
 * key `schedule:<name>@<tick>`, so a duplicate or late delivery of the same tick (the midnight interest
 * accrual, say) enqueues it once.
 */
export function createScheduleHandler(deps: {
  runtime: JobRuntime;
  o: Observability;
  /** Wakes fetch-ready at once after a new job (optional: without it the job waits for the next minute). */
  waker?: FetchReadyWaker;
}) {
  return async (event: unknown, _context?: Context) => {
    const parsed = scheduleTickSchema.safeParse(event);
    if (!parsed.success) {
      deps.o.logger.error('rejected a malformed schedule event; nothing written', {
        issues: parsed.error.issues,
      });
      throw new Error('malformed schedule event');
    }
    const schedule = findSchedule(parsed.data.schedule);
    if (!schedule) {
      deps.o.logger.error('unknown schedule; nothing written', { schedule: parsed.data.schedule });
      throw new Error(`unknown schedule ${parsed.data.schedule}`);
    }
    const [result] = await deps.runtime.tracker.enqueueUntyped([
      jobForTick(schedule, new Date(parsed.data.time)),
    ]);
    deps.o.logger.info(result!.created ? 'schedule tick enqueued' : 'schedule tick already enqueued', {
      schedule: schedule.name,
      jobId: result!.job.id,
    });
    // Best effort: the job is committed, and the every-minute fetch-ready finds it anyway.
    if (result!.created) await deps.waker?.wake();
    return { jobId: result!.job.id, created: result!.created };
  };
}

const o = createObservability('schedule');
let lazy: ReturnType<typeof createScheduleHandler> | undefined;
export const handler = withObservability((event: unknown, context: Context) => {
  if (!lazy) {
    const runtime = runtimeFromEnv(o);
    const waker = wakerFromEnv(runtime, (err) =>
      o.logger.warn('could not nudge fetch-ready', { error: String(err) }),
    );
    lazy = createScheduleHandler({ runtime, o, waker });
  }
  return lazy(event, context);
}, o);
