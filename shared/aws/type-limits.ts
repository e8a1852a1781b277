import { DEFAULT_TYPE_CONCURRENCY, DEFAULT_TYPE_CONCURRENCY_ENV } from '../jobs/registry.js';

/**
 * The stack's cap on a job type that declares no concurrency limit (`DEFAULT_TYPE_CONCURRENCY` when
 * unset): every AWS door that claims (fetch-ready, the executors, the application's `AwsJobClient` when it
 * starts a lone job itself) reads it, so none of them exceeds it.
 */
export function defaultTypeConcurrency(env: NodeJS.ProcessEnv): number {
  const raw = env[DEFAULT_TYPE_CONCURRENCY_ENV];
  if (raw === undefined || raw === '') return DEFAULT_TYPE_CONCURRENCY;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 10_000)
    throw new Error(
      `environment variable ${DEFAULT_TYPE_CONCURRENCY_ENV} must be an integer from 1 to 10000`,
    );
  return n;
}
