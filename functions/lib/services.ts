import { SESv2Client } from '@aws-sdk/client-sesv2';
import type { ServiceTracker } from '../../shared/aws/follow-ups.js';
import { createHttpPriceSource, createJobServices, createSesNotifier } from '../../shared/domain/index.js';
import { lendingSettingsFromEnv, SETTING_NAMES } from '../../shared/domain/settings.js';
import type { JobServices } from '../../shared/job-types/index.js';
import type { JobRuntime } from './runtime.js';
import { traceClient } from './tracing.js';

/**
 * The lending services the executors run against on AWS: e-mail through SES, prices from the configured
 * HTTP source. The one place that wires the domain into the Lambda functions.
 */
export function servicesFromEnv(
  runtime: JobRuntime,
  env: NodeJS.ProcessEnv = process.env,
  /** The tracker the services enqueue through (a `FollowUpNudge`'s, for executors with follow-ups). */
  tracker: ServiceTracker = runtime.tracker,
): JobServices {
  const settings = lendingSettingsFromEnv(env);
  // On AWS there is no simulated feed and no outbox file: both must be configured.
  const { priceUrl, notificationFromAddress } = settings;
  if (!priceUrl) throw new Error(`environment variable ${SETTING_NAMES.priceUrl} is not set`);
  if (!notificationFromAddress)
    throw new Error(`environment variable ${SETTING_NAMES.notificationFromAddress} is not set`);
  return createJobServices({
    db: runtime.db,
    tracker,
    notifier: createSesNotifier({
      fromAddress: notificationFromAddress,
      client: runtime.o ? traceClient(runtime.o, new SESv2Client({})) : undefined,
    }),
    priceSource: [priceUrl, ...settings.extraPriceUrls].map((url) =>
      createHttpPriceSource({ url, timeoutMs: settings.priceTimeoutMs }),
    ),
    maxPriceJump: settings.maxPriceJump,
    priceAgreement: settings.priceAgreement,
    priceConfirmRuns: settings.priceConfirmRuns,
    maxValuationAgeSeconds: settings.maxValuationAgeSeconds,
    maxQuoteAgeSeconds: settings.maxQuoteAgeSeconds,
    upgradeBuffer: settings.upgradeBuffer,
    retentionDays: settings.retentionDays,
  });
}
