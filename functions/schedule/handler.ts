import type { Context } from 'aws-lambda';
import * as z from 'zod';
import type { FetchReadyWaker } from '../../shared/aws/waker.js';
import { findSchedule, jobForTick, ticksToFire } from '../../shared/schedules/definitions.js';
import { fireTicks } from '../../shared/schedules/fire.js';
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
 * accrual, say) enqueues it once. For a schedule with a backfill window the tick also enqueues each earlier
 * tick of the window not yet recorded, oldest first: the first tick delivered after an outage (EventBridge
 * retries a failed invocation for up to two hours) fills in those it missed.
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
    const time = new Date(parsed.data.time);
    const { tracker } = deps.runtime;
    // The event's own tick is the last (without a backfill window, the only) one.
    const ticks = schedule.backfill === undefined ? [time] : ticksToFire(schedule, time);
    const results = await fireTicks(
      tracker,
      ticks.map((tick) => ({ schedule, tick })),
    );
    const own = jobForTick(schedule, time);
    const mine = results.at(-1);
    // A backfilled tick recorded before: its job, if retention has not deleted it.
    const jobId = mine?.job.id ?? (await tracker.getJobByKey(own.type, own.idempotencyKey!))?.id ?? null;
    const created = mine?.created === true;
    const backfilled = results.slice(0, -1).filter((r) => r?.created).length;
    deps.o.logger.info(created ? 'schedule tick enqueued' : 'schedule tick already enqueued', {
      schedule: schedule.name,
      jobId,
      ...(backfilled > 0 ? { backfilled } : {}),
    });
    // Best effort: the job is committed, and the every-minute fetch-ready finds it anyway.
    if (created || backfilled > 0) await deps.waker?.wake();
    return backfilled > 0 ? { jobId, created, backfilled } : { jobId, created };
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
