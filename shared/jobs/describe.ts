import type { JobStatus } from './model.js';
import type { RegisteredJobType } from './registry.js';

/** How jobs and their types read to a person: the words the CLI and the console share. */

export function humanSeconds(seconds: number): string {
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${+(seconds / 60).toFixed(1)}m`;
  if (seconds < 86_400) return `${+(seconds / 3600).toFixed(1)}h`;
  return `${+(seconds / 86_400).toFixed(1)}d`;
}

/** A type's declared limits in a few words: `10 at once, 14 per 1s, 1 per facilityId`; `-` for none. */
export function limitsText(
  t: Pick<RegisteredJobType, 'concurrency' | 'rateLimit' | 'concurrencyKey'>,
): string {
  const parts = [
    t.concurrency === undefined ? null : `${t.concurrency} at once`,
    t.rateLimit === undefined ? null : `${t.rateLimit.limit} per ${humanSeconds(t.rateLimit.perSeconds)}`,
    t.concurrencyKey === undefined ? null : `${t.concurrencyKey.limit} per ${t.concurrencyKey.field}`,
  ].filter((p) => p !== null);
  return parts.length === 0 ? '-' : parts.join(', ');
}

/** When a job finished, named by how (a failed job did not complete). */
export function finishedLabel(status: JobStatus): string {
  if (status === 'completed') return 'completed at';
  if (status === 'failed') return 'failed at';
  if (status === 'cancelled') return 'cancelled at';
  return 'finished at';
}
