/**
 * Recurring-schedule expressions in EventBridge's terms, so one definition yields both the EventBridge
 * rule (`cron(...)` / `rate(...)`) and the local runtime's tick computation. Times are UTC, as EventBridge
 * rules are.
 *
 * Cron fields follow EventBridge: minute, hour, day-of-month, month, day-of-week (1-7 = SUN-SAT), with
 * `*`, `?`, numbers, `a-b` ranges, `a,b` lists and `/n` steps. Exactly one of day-of-month and day-of-week
 * must be `?`.
 */
export type ScheduleExpression =
  | {
      kind: 'cron';
      minute: string;
      hour: string;
      dayOfMonth?: string;
      month?: string;
      dayOfWeek?: string;
    }
  | { kind: 'rate'; minutes: number };

/** The EventBridge rule expression. */
export function toEventBridgeExpression(e: ScheduleExpression): string {
  if (e.kind === 'rate') return e.minutes === 1 ? 'rate(1 minute)' : `rate(${e.minutes} minutes)`;
  const dom = e.dayOfMonth ?? (e.dayOfWeek && e.dayOfWeek !== '?' ? '?' : '*');
  const dow = e.dayOfWeek ?? (dom === '?' ? '*' : '?');
  return `cron(${e.minute} ${e.hour} ${dom} ${e.month ?? '*'} ${dow} *)`;
}

function parseField(field: string, min: number, max: number): Set<number> {
  const values = new Set<number>();
  for (const part of field.split(',')) {
    const [range, stepText] = part.split('/');
    const step = stepText === undefined ? 1 : Number(stepText);
    let lo = min;
    let hi = max;
    if (range !== '*' && range !== '?') {
      const [a, b] = range!.split('-');
      lo = Number(a);
      hi = b === undefined ? (stepText === undefined ? lo : max) : Number(b);
    }
    if (![lo, hi, step].every(Number.isInteger) || lo < min || hi > max || lo > hi || step < 1) {
      throw new Error(`invalid cron field "${field}" (allowed ${min}-${max})`);
    }
    for (let v = lo; v <= hi; v += step) values.add(v);
  }
  return values;
}

interface CompiledCron {
  minutes: Set<number>;
  hours: Set<number>;
  daysOfMonth: Set<number> | null;
  months: Set<number>;
  daysOfWeek: Set<number> | null;
}

function compile(e: Extract<ScheduleExpression, { kind: 'cron' }>): CompiledCron {
  const dom = e.dayOfMonth ?? '*';
  const dow = e.dayOfWeek ?? '?';
  return {
    minutes: parseField(e.minute, 0, 59),
    hours: parseField(e.hour, 0, 23),
    daysOfMonth: dom === '?' ? null : parseField(dom, 1, 31),
    months: parseField(e.month ?? '*', 1, 12),
    daysOfWeek: dow === '?' ? null : parseField(dow, 1, 7),
  };
}

function matches(c: CompiledCron, t: Date): boolean {
  return (
    c.minutes.has(t.getUTCMinutes()) &&
    c.hours.has(t.getUTCHours()) &&
    c.months.has(t.getUTCMonth() + 1) &&
    (c.daysOfMonth === null || c.daysOfMonth.has(t.getUTCDate())) &&
    (c.daysOfWeek === null || c.daysOfWeek.has(t.getUTCDay() + 1))
  );
}

/** How far back the local runtime looks for a missed tick (a laptop that slept through midnight). */
const LOOKBACK_MINUTES = 32 * 24 * 60;

/** The latest tick at or before `at` (to the minute), or null if none within the look-back window. */
export function latestTick(e: ScheduleExpression, at: Date): Date | null {
  const minute = Math.floor(at.getTime() / 60_000) * 60_000;
  if (e.kind === 'rate') {
    const period = e.minutes * 60_000;
    return new Date(Math.floor(minute / period) * period);
  }
  const c = compile(e);
  for (let i = 0; i <= LOOKBACK_MINUTES; i++) {
    const t = new Date(minute - i * 60_000);
    if (matches(c, t)) return t;
  }
  return null;
}

/** The first tick strictly after `at`. */
export function nextTick(e: ScheduleExpression, at: Date): Date | null {
  const minute = Math.floor(at.getTime() / 60_000) * 60_000;
  if (e.kind === 'rate') {
    const period = e.minutes * 60_000;
    return new Date((Math.floor(minute / period) + 1) * period);
  }
  const c = compile(e);
  for (let i = 1; i <= LOOKBACK_MINUTES; i++) {
    const t = new Date(minute + i * 60_000);
    if (matches(c, t)) return t;
  }
  return null;
}

/**
 * The ticks after `after` and at or before `upTo` (to the minute), oldest first: at most `max`, the newest
 * ones when there are more.
 */
export function ticksBetween(e: ScheduleExpression, after: Date, upTo: Date, max: number): Date[] {
  const from = Math.floor(after.getTime() / 60_000) * 60_000;
  const to = Math.floor(upTo.getTime() / 60_000) * 60_000;
  const ticks: Date[] = [];
  if (e.kind === 'rate') {
    const period = e.minutes * 60_000;
    for (let t = Math.floor(to / period) * period; t > from && ticks.length < max; t -= period)
      ticks.push(new Date(t));
  } else {
    const c = compile(e);
    for (let t = to; t > from && ticks.length < max; t -= 60_000) {
      const d = new Date(t);
      if (matches(c, d)) ticks.push(d);
    }
  }
  return ticks.reverse();
}
