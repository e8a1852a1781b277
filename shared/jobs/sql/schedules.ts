/** Schedule backfill: the record of fired ticks (migration 0019). */

/**
 * Records the ticks (:ticks, a JSON array of {schedule, tick}) not recorded yet and returns those, in the
 * transaction that then enqueues their jobs: a tick another firer recorded (committed, or waited for here
 * on its key) is not returned, so each tick is enqueued once, however many firers and however late. A
 * schedule's latest tick given is always taken; an earlier one only when the schedule has a recorded tick
 * before it: a tick is missed only after one that fired, so a new schedule (or the first run after
 * migration 0019) starts from its latest tick and does not fill a window it never ran in. The
 * second part answers a resend of this statement inside the same transaction (the Data API's client
 * sends a statement again when its answer is lost) with the ticks the first send recorded under this
 * call's :token; on a first send it sees none (the statement's snapshot predates its insert).
 */
export const recordScheduleTicksSql = `
WITH wanted AS (
  SELECT t.schedule, t.tick, t.tick = max(t.tick) OVER (PARTITION BY t.schedule) AS latest
  FROM json_to_recordset(CAST(:ticks AS json)) AS t(schedule text, tick timestamptz)
), recorded AS (
  INSERT INTO schedule_ticks (schedule, tick, fired_at, fired_by)
  SELECT w.schedule, w.tick, COALESCE(CAST(:now AS timestamptz), now()), CAST(:token AS uuid) FROM wanted w
  WHERE w.latest OR EXISTS (SELECT 1 FROM schedule_ticks s WHERE s.schedule = w.schedule AND s.tick < w.tick)
  ORDER BY w.schedule, w.tick
  ON CONFLICT (schedule, tick) DO NOTHING
  RETURNING schedule, tick
)
SELECT schedule, tick FROM recorded
UNION
SELECT s.schedule, s.tick FROM schedule_ticks s JOIN wanted w ON (s.schedule, s.tick) = (w.schedule, w.tick)
WHERE s.fired_by = CAST(:token AS uuid)`;
