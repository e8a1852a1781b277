/**
 * Errors the job system raises on bad input. Each carries a machine-readable `code` and a one-line message;
 * whenever one is thrown, nothing has been written.
 */
export type JobInputErrorCode =
  | 'unknown_job_type'
  | 'invalid_payload'
  | 'payload_too_large'
  | 'invalid_option'
  | 'invalid_id'
  | 'job_not_found'
  | 'invalid_state';

export class JobInputError extends Error {
  override readonly name = 'JobInputError';
  constructor(
    readonly code: JobInputErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Thrown by an executor for a failure that retrying cannot fix (bad data, a rule violation): the job
 * fails at once, with this message in `last_error`.
 */
export class PermanentJobError extends Error {
  override readonly name = 'PermanentJobError';
}

/** Returned (or thrown) by an executor that wants its job run again later without it counting as a failure. */
export class RetryJobLater extends Error {
  override readonly name = 'RetryJobLater';
  constructor(
    readonly retryAt: Date,
    reason = 'executor asked to retry later',
  ) {
    super(reason);
  }
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  if (typeof err === 'string') return err;
  try {
    return JSON.stringify(err) ?? String(err);
  } catch {
    return String(err);
  }
}
