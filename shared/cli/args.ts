import { parseArgs } from 'node:util';
import { JobInputError } from '../jobs/errors.js';

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
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: argv,
      options: { ...GLOBAL_OPTIONS, ...options },
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

/** Parses `--payload` JSON; a malformed document is a usage error naming the problem. */
export function jsonOption(p: Parsed, name: string): unknown {
  const raw = stringOption(p, name);
  if (raw === undefined) return undefined;
  try {
    return JSON.parse(raw);
  } catch (err) {
    throw new JobInputError('invalid_payload', `--${name} is not valid JSON: ${(err as Error).message}`);
  }
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `90s`, `5m`, `2h`, `1d` → milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(text.trim());
  if (!m) throw new UsageError(`"${text}" is not a duration (use e.g. 30s, 5m, 2h, 1d)`);
  return Number(m[1]) * UNITS[m[2]!]!;
}

/** An ISO 8601 timestamp with a time zone (Z or an offset): times are never read as local time. */
export function parseInstant(text: string): Date {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/.test(text.trim())) {
    throw new UsageError(`"${text}" is not an ISO 8601 time with a zone (e.g. 2026-12-01T00:00:00Z)`);
  }
  const d = new Date(text);
  if (Number.isNaN(d.getTime())) throw new UsageError(`"${text}" is not a valid time`);
  return d;
}
