/** Schedule backfill: the record of fired ticks (migration 0019). */

/**
 * Records the ticks (:ticks, a JSON array of {schedule, tick}) not recorded yet and returns those, in the
 * transaction that then enqueues their jobs: a tick another firer recorded (committed, or waited for here
 * on its key) is not returned, so each tick is enqueued once, however many firers and however late.
 */
export const recordScheduleTicksSql = `
INSERT INTO schedule_ticks (schedule, tick, fired_at)
SELECT t.schedule, t.tick, COALESCE(CAST(:now AS timestamptz), now())
FROM json_to_recordset(CAST(:ticks AS json)) AS t(schedule text, tick timestamptz)
ON CONFLICT (schedule, tick) DO NOTHING
RETURNING schedule, tick`;
