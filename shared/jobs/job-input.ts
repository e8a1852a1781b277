import { JobInputError } from './errors.js';
import { RETRY_LIMITS } from './retry-policy.js';

/**
 * The rules for a new job's options, in one place for every door: the CLI, the console, the application
 * API (the tracker's `enqueue`/`enqueueUntyped`, `AwsJobClient`) all reach these parsers through the
 * tracker's validation, so the same input is refused with the same message everywhere, and nothing is
 * written. Text (a command line, a form, a JSON event) and typed values (application code) are both read.
 */

/** Lower runs first. The table's CHECK constraint holds the same range. */
export const PRIORITY_RANGE = { min: -1000, max: 1000 } as const;
export const MAX_ATTEMPTS_RANGE = RETRY_LIMITS.maxAttempts;
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;
/** Scheduling further ahead than this is almost certainly a unit mistake. */
export const MAX_SCHEDULE_AHEAD_MS = 5 * 366 * 24 * 3600 * 1000;
/** Times read from text: any earlier is a typo (and a past run time means "now" anyway). */
export const TIME_RANGE = { minYear: 1970, maxYear: 9999 } as const;

function got(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') return String(value);
  return value === null ? 'null' : typeof value;
}

/** An integer given as a number, or as its decimal text (a form field, a command-line option). */
function integerIn(label: string, value: unknown, range: { min: number; max: number }, note = ''): number {
  const n =
    typeof value === 'number'
      ? value
      : typeof value === 'string' && /^-?\d+$/.test(value)
        ? Number(value)
        : NaN;
  if (!Number.isInteger(n) || n < range.min || n > range.max) {
    throw new JobInputError(
      'invalid_option',
      `${label} must be an integer from ${range.min} to ${range.max}${note} (got ${got(value)})`,
    );
  }
  return n;
}

export function parsePriority(value: unknown): number {
  return integerIn('priority', value, PRIORITY_RANGE, ', lower runs first');
}

export function parseMaxAttempts(value: unknown): number {
  return integerIn('max attempts', value, MAX_ATTEMPTS_RANGE);
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Whether text came through intact: a shell or a form decoder hands over invalid UTF-8 as U+FFFD, so two
 * different byte strings would become the same key.
 */
export function isIntactText(text: string): boolean {
  return !text.includes('\uFFFD') && !LONE_SURROGATE.test(text);
}

export function parseIdempotencyKey(value: unknown, label = 'idempotency key'): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
    throw new JobInputError(
      'invalid_option',
      `${label} must be 1 to ${MAX_IDEMPOTENCY_KEY_LENGTH} characters (got ${typeof value === 'string' ? value.length : got(value)})`,
    );
  }
  if (value.includes('\u0000'))
    throw new JobInputError('invalid_option', `${label} contains a NUL character`);
  if (!isIntactText(value)) {
    throw new JobInputError(
      'invalid_option',
      `${label} is not valid UTF-8 text (it holds U+FFFD or a lone surrogate)`,
    );
  }
  return value;
}

/** A debounce window: a burst's job runs this long after its last enqueue. */
export const DEBOUNCE_WINDOW_SECONDS_RANGE = { min: 1, max: 86_400 } as const;
/** The longest a burst may hold its job back, from its first enqueue (at least the window). */
export const DEBOUNCE_MAX_WAIT_SECONDS_MAX = 7 * 86_400;

/** Debounce as given: application code passes numbers, a command line or a form may pass text. */
export interface DebounceInput {
  key: unknown;
  windowSeconds: unknown;
  maxWaitSeconds?: unknown;
}

export interface Debounce {
  key: string;
  windowSeconds: number;
  /** Null: no deadline, an endless burst holds its job back for as long as it lasts. */
  maxWaitSeconds: number | null;
}

/**
 * `debounce: { key, windowSeconds, maxWaitSeconds? }`: the key by the rules of an idempotency key (it is
 * stored in the same kind of column), the window from 1 s to a day, the maximum wait from the window to
 * seven days.
 */
export function parseDebounce(value: unknown): Debounce {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new JobInputError(
      'invalid_option',
      `debounce must be an object { key, windowSeconds, maxWaitSeconds? } (got ${Array.isArray(value) ? 'an array' : got(value)})`,
    );
  }
  const input = value as DebounceInput;
  const key = parseIdempotencyKey(input.key, 'debounce key');
  const windowSeconds = integerIn(
    'debounce window',
    input.windowSeconds,
    DEBOUNCE_WINDOW_SECONDS_RANGE,
    ' seconds',
  );
  const maxWaitSeconds =
    input.maxWaitSeconds === undefined || input.maxWaitSeconds === null
      ? null
      : integerIn(
          'debounce maximum wait',
          input.maxWaitSeconds,
          { min: windowSeconds, max: DEBOUNCE_MAX_WAIT_SECONDS_MAX },
          ' seconds (at least the window)',
        );
  return { key, windowSeconds, maxWaitSeconds };
}

const TIME_TEXT =
  /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:?\d{2})?$/;

/**
 * An ISO 8601 time, read by its fields and never through `Date`'s lenient parser: a day or an hour that
 * does not exist (2027-02-30, T24:00) is refused rather than rolled over, and so is a year outside
 * `TIME_RANGE`. A time without a zone is refused, or read as UTC where the door says so (the console's
 * fields are labelled UTC); it is never read as this machine's local time.
 */
export function parseTimeText(label: string, text: string, options: { zonelessIsUtc?: boolean } = {}): Date {
  const m = TIME_TEXT.exec(text);
  if (!m) {
    throw new JobInputError(
      'invalid_option',
      `${label} "${text}" is not an ISO 8601 time (e.g. 2026-12-01T00:00:00Z)`,
    );
  }
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map((v) => Number(v ?? 0)) as number[];
  const calendar = new Date(Date.UTC(2000, month! - 1, day!));
  calendar.setUTCFullYear(year!);
  if (
    month! < 1 ||
    month! > 12 ||
    calendar.getUTCMonth() !== month! - 1 ||
    calendar.getUTCDate() !== day ||
    hour! > 23 ||
    minute! > 59 ||
    second! > 59
  ) {
    throw new JobInputError('invalid_option', `${label} "${text}" is not a date and time that exists`);
  }
  if (year! < TIME_RANGE.minYear || year! > TIME_RANGE.maxYear) {
    throw new JobInputError(
      'invalid_option',
      `${label} "${text}" is out of range (years ${TIME_RANGE.minYear} to ${TIME_RANGE.maxYear})`,
    );
  }
  let zone = m[8];
  if (zone === undefined) {
    if (!options.zonelessIsUtc) {
      throw new JobInputError(
        'invalid_option',
        `${label} "${text}" has no time zone (add Z for UTC, e.g. 2026-12-01T00:00:00Z)`,
      );
    }
    zone = 'Z';
  }
  let offsetMinutes = 0;
  if (zone !== 'Z') {
    const sign = zone.startsWith('-') ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    const oh = Number(digits.slice(0, 2));
    const om = Number(digits.slice(2));
    if (oh > 23 || om > 59) {
      throw new JobInputError(
        'invalid_option',
        `${label} "${text}" has a time zone offset that does not exist`,
      );
    }
    offsetMinutes = sign * (oh * 60 + om);
  }
  const ms = m[7] ? Number(m[7].padEnd(3, '0').slice(0, 3)) : 0;
  // The year is at least 1970 here, so Date.UTC does not read it as 19xx.
  return new Date(Date.UTC(year!, month! - 1, day!, hour!, minute!, second!, ms) - offsetMinutes * 60_000);
}

/**
 * When a job runs: a `Date` from application code, or ISO 8601 text from untyped input. Refused: an
 * invalid date, a time outside `TIME_RANGE`, and more than `MAX_SCHEDULE_AHEAD_MS` ahead of `now`.
 */
export function parseRunAt(value: unknown, now: Date, options: { zonelessIsUtc?: boolean } = {}): Date {
  let d: Date;
  if (typeof value === 'string') d = parseTimeText('run at', value, options);
  else if (value instanceof Date && !Number.isNaN(value.getTime())) {
    d = value;
    const year = d.getUTCFullYear();
    if (year < TIME_RANGE.minYear || year > TIME_RANGE.maxYear) {
      throw new JobInputError(
        'invalid_option',
        `run at "${d.toISOString()}" is out of range (years ${TIME_RANGE.minYear} to ${TIME_RANGE.maxYear})`,
      );
    }
  } else {
    const what = value instanceof Date ? 'an invalid Date' : got(value);
    throw new JobInputError('invalid_option', `run at must be a valid time (got ${what})`);
  }
  if (d.getTime() - now.getTime() > MAX_SCHEDULE_AHEAD_MS) {
    throw new JobInputError('invalid_option', 'run at is more than 5 years ahead');
  }
  return d;
}

/** A payload must be a JSON object (each type's schema then checks its fields). */
export function requirePayloadObject(value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    const kind = value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
    throw new JobInputError('invalid_payload', `payload must be a JSON object (got ${kind})`);
  }
  return value as Record<string, unknown>;
}

/** A payload given as JSON text (`--payload`, the console's payload field). */
export function parsePayloadText(text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new JobInputError('invalid_payload', `payload is not valid JSON: ${(err as Error).message}`);
  }
  return requirePayloadObject(value);
}

/** A per-key limit's key is kept to this many characters (the table's CHECK holds the same). */
export const MAX_CONCURRENCY_KEY_LENGTH = 200;

/**
 * A job's concurrency key, read from its validated payload's `field` (the type's `concurrencyKey`): a
 * string, or an integer written in decimal. No key (null) when the payload has no such field or it is
 * null: such a job is not limited per key. Anything else is refused, naming the field.
 */
export function parseConcurrencyKey(type: string, field: string, payload: unknown): string | null {
  const value = (requirePayloadObject(payload) as Record<string, unknown>)[field];
  if (value === undefined || value === null) return null;
  const what = `payload.${field} (the concurrency key of ${type})`;
  let key: string;
  if (typeof value === 'string') key = value;
  else if (typeof value === 'number' && Number.isSafeInteger(value)) key = String(value);
  else
    throw new JobInputError('invalid_payload', `${what} must be a string or an integer (got ${got(value)})`);
  if (key.length === 0 || key.length > MAX_CONCURRENCY_KEY_LENGTH) {
    throw new JobInputError(
      'invalid_payload',
      `${what} must be 1 to ${MAX_CONCURRENCY_KEY_LENGTH} characters (got ${key.length})`,
    );
  }
  if (key.includes('\u0000') || !isIntactText(key))
    throw new JobInputError(
      'invalid_payload',
      `${what} is not valid text (it holds NUL, U+FFFD or a lone surrogate)`,
    );
  return key;
}
