import { createHttpPriceSource, createJobServices, createSesNotifier } from '../../shared/domain/index.js';
import type { JobServices } from '../../shared/job-types/index.js';
import { type JobRuntime, required } from './runtime.js';

/**
 * The lending services the executors run against on AWS: e-mail through SES, prices from the configured
 * HTTP source. The one place that wires the domain into the Lambda functions.
 */
export function servicesFromEnv(runtime: JobRuntime, env: NodeJS.ProcessEnv = process.env): JobServices {
  return createJobServices({
    db: runtime.db,
    tracker: runtime.tracker,
    notifier: createSesNotifier({ fromAddress: required(env, 'NOTIFICATION_FROM_ADDRESS') }),
    priceSource: createHttpPriceSource({
      url: required(env, 'PRICE_SOURCE_URL'),
      timeoutMs: Number(env.PRICE_SOURCE_TIMEOUT_MS ?? 5000),
    }),
    retentionDays: env.JOB_RETENTION_DAYS ? Number(env.JOB_RETENTION_DAYS) : undefined,
  });
}
