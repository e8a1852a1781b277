import { SESv2Client } from '@aws-sdk/client-sesv2';
import type { ServiceTracker } from '../../shared/aws/follow-ups.js';
import { createJobService, createSesNotifier, valuationDeps } from '../../shared/domain/index.js';
import { lendingSettingsFromEnv, SETTING_NAMES } from '../../shared/domain/settings.js';
import { executorNeeds, executorService } from '../../shared/job-types/executor-needs.js';
import type { JobServices } from '../../shared/job-types/index.js';
import type { JobRuntime } from './runtime.js';
import { traceClient } from './tracing.js';

/**
 * The lending services an executor on AWS runs against: only the one its job type calls
 * (`EXECUTOR_SERVICE`), built from only the settings its type declares (`EXECUTOR_NEEDS`): e-mail through
 * SES for the notification executor, prices from the configured HTTP sources for the valuation's. The one
 * place that wires the domain into the Lambda functions. Another service asked for is an error naming the
 * declaration, never a silent default.
 */
export function servicesFromEnv(
  runtime: JobRuntime,
  jobType: string,
  env: NodeJS.ProcessEnv = process.env,
  /** The tracker the services enqueue through (a `FollowUpNudge`'s, for executors with follow-ups). */
  tracker: ServiceTracker = runtime.tracker,
): JobServices {
  const key = executorService(jobType);
  if (!key) throw new Error(`no job service is declared for ${jobType} (shared/job-types/executor-needs.ts)`);
  const needs = executorNeeds(jobType);
  const settings = lendingSettingsFromEnv(env);
  const setting = <K extends 'priceUrl' | 'notificationFromAddress'>(name: K): string => {
    const value = settings[name];
    // On AWS there is no simulated feed and no outbox file: what a type needs must be configured.
    if (!value) throw new Error(`environment variable ${SETTING_NAMES[name]} is not set`);
    return value;
  };
  const service = createJobService(key, {
    db: runtime.db,
    tracker,
    ...(needs.includes('email-sender')
      ? {
          notifier: createSesNotifier({
            fromAddress: setting('notificationFromAddress'),
            client: runtime.o ? traceClient(runtime.o, new SESv2Client({})) : undefined,
          }),
        }
      : {}),
    ...(needs.includes('valuation-settings')
      ? valuationDeps(settings, [setting('priceUrl'), ...settings.extraPriceUrls])
      : {}),
    ...(needs.includes('job-retention') ? { retentionDays: settings.retentionDays } : {}),
  });
  return onlyService(jobType, key, service);
}

/** `service` as the executor's services: any other one asked for is refused, naming the declaration. */
function onlyService<K extends keyof JobServices>(
  jobType: string,
  key: K,
  service: JobServices[K],
): JobServices {
  const refuse = (other: keyof JobServices) => () => {
    throw new Error(
      `the ${jobType} executor builds only its ${key} service; ${other} is not declared for it (shared/job-types/executor-needs.ts)`,
    );
  };
  const keys: (keyof JobServices)[] = [
    'approvals',
    'credit',
    'notifications',
    'reminders',
    'portfolio',
    'maintenance',
  ];
  const services = {} as JobServices;
  for (const k of keys) {
    if (k === key) Object.defineProperty(services, k, { value: service, enumerable: true });
    else Object.defineProperty(services, k, { get: refuse(k), enumerable: false });
  }
  return services;
}
