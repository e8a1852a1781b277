/**
 * The default retry rule: after failed attempt n, if n < max_attempts, the job is retried after
 * 2^n minutes, capped at 32 minutes: 2, 4, 8, 16, 32. With the default of 6 attempts every one of those
 * delays is used before the job becomes `failed`.
 *
 * The database applies the rule (`failAttemptsFromInputSql` for reported failures, `rescueExpiredLeasesSql`
 * for expired leases, in shared/jobs/sql/attempts.ts) so that every adapter and the rescuer agree; this
 * module holds the settings and the same formula for display (`lana-jobs types`) and documentation.
 */
export interface RetrySettings {
  /** Attempts before the job becomes `failed`. */
  maxAttempts: number;
  /** Delay after attempt n is `min(backoffBaseSeconds * 2^n, backoffCapSeconds)`. */
  backoffBaseSeconds: number;
  backoffCapSeconds: number;
}

export const DEFAULT_RETRY: RetrySettings = {
  maxAttempts: 6,
  backoffBaseSeconds: 60,
  backoffCapSeconds: 32 * 60,
};

export const RETRY_LIMITS = {
  maxAttempts: { min: 1, max: 100 },
  backoffBaseSeconds: { min: 0, max: 86_400 },
  backoffCapSeconds: { min: 0, max: 604_800 },
} as const;

/** Seconds to wait after failed attempt `attempt` (1-based, counted since the last operator retry). */
export function backoffSeconds(attempt: number, settings: RetrySettings = DEFAULT_RETRY): number {
  return Math.min(settings.backoffBaseSeconds * 2 ** attempt, settings.backoffCapSeconds);
}

/** The delays a job of these settings goes through, one per retry. */
export function retrySchedule(settings: RetrySettings = DEFAULT_RETRY): number[] {
  return Array.from({ length: settings.maxAttempts - 1 }, (_, i) => backoffSeconds(i + 1, settings));
}
