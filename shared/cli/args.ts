import { parseArgs } from 'node:util';
import { isIntactText } from '../jobs/job-input.js';

/** A bad command line: printed as one line, exit code 2, nothing written. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string }>;

export const GLOBAL_OPTIONS = {
  json: { type: 'boolean' },
  'database-url': { type: 'string' },
  'data-api': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies OptionSpec;

export interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/** Strict parsing: an unknown option or a missing value is a usage error, not a guess. */
export function parseCommandLine(argv: string[], options: OptionSpec, maxPositionals: number): Parsed {
  const spec: OptionSpec = { ...GLOBAL_OPTIONS, ...options };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: joinNegativeValues(argv, spec),
      options: spec,
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError((err as Error).message.split('\n')[0]);
  }
  if (parsed.positionals.length > maxPositionals) {
    throw new UsageError(`unexpected argument "${parsed.positionals[maxPositionals]}"`);
  }
  return { values: parsed.values as Parsed['values'], positionals: parsed.positionals };
}

/**
 * `--priority -5`: node's parser reads `-5` as an option and calls the value ambiguous. A string option
 * followed by a negative number takes it as its value, as `--priority=-5` would.
 */
function joinNegativeValues(argv: string[], spec: OptionSpec): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    const next = argv[i + 1];
    const name = token.startsWith('--') ? token.slice(2) : undefined;
    if (name && spec[name]?.type === 'string' && next !== undefined && /^-\d/.test(next)) {
      out.push(`${token}=${next}`);
      i++;
    } else out.push(token);
  }
  return out;
}

export function requirePositional(p: Parsed, index: number, name: string): string {
  const v = p.positionals[index];
  if (v === undefined || v === '') throw new UsageError(`missing <${name}>`);
  return v;
}

export function stringOption(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === 'string' ? v : undefined;
}

export function integerOption(p: Parsed, name: string, min: number, max: number): number | undefined {
  const raw = stringOption(p, name);
  if (raw === undefined) return undefined;
  if (!/^-?\d+$/.test(raw.trim())) throw new UsageError(`--${name} must be an integer (got "${raw}")`);
  const n = Number(raw);
  if (n < min || n > max) throw new UsageError(`--${name} must be from ${min} to ${max} (got ${n})`);
  return n;
}

/**
 * A text option stored as given: the shell hands over invalid UTF-8 as U+FFFD, so two different byte
 * strings would become the same text; refused instead, as is text over `maxLength` characters.
 */
export function textOption(p: Parsed, name: string, maxLength: number): string | undefined {
  const raw = stringOption(p, name);
  if (raw === undefined) return undefined;
  if (!isIntactText(raw)) {
    throw new UsageError(`--${name} is not valid UTF-8`);
  }
  if (raw.length > maxLength) {
    throw new UsageError(`--${name} is ${raw.length} characters; at most ${maxLength}`);
  }
  return raw;
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Durations beyond a century are typos, and would leave the range of a timestamp. */
const MAX_DURATION_DAYS = 36_500;

/** `90s`, `5m`, `2h`, `1d` → milliseconds; `option` names the flag in errors. */
export function parseDuration(text: string, option = 'duration'): number {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(text.trim());
  if (!m) throw new UsageError(`--${option} "${text}" is not a duration (use e.g. 30s, 5m, 2h, 1d)`);
  const ms = Number(m[1]) * UNITS[m[2]!]!;
  if (ms > MAX_DURATION_DAYS * UNITS.d!) {
    throw new UsageError(`--${option} ${text} is out of range (at most ${MAX_DURATION_DAYS}d)`);
  }
  return ms;
}
