import * as z from 'zod';

/**
 * The settings of the lending services, read from the environment under ONE set of names by the local
 * runtime and by the Lambda functions (the CDK stack sets these same names). A bad value is an error that
 * names the variable, at start-up, rather than a NaN timeout or retention found out later.
 */
export const SETTING_NAMES = {
  priceUrl: 'LANA_PRICE_URL',
  priceTimeoutMs: 'LANA_PRICE_TIMEOUT_MS',
  notificationFromAddress: 'LANA_NOTIFICATION_FROM_ADDRESS',
  retentionDays: 'LANA_JOB_RETENTION_DAYS',
} as const;

export interface LendingSettings {
  /** The BTC/USD price source (unset locally: the runtime starts a simulated feed). */
  priceUrl: string | undefined;
  /** How long a price request may take. Default 5,000 ms. */
  priceTimeoutMs: number;
  /** The sender of e-mail notifications (SES on AWS; the local runtime writes an outbox file). */
  notificationFromAddress: string | undefined;
  /** How long finished jobs are kept before the maintenance job prunes them. Default 30 days. */
  retentionDays: number | undefined;
}

const positiveInt = z.coerce.number().int().positive();
const schema = z.object({
  priceUrl: z.url({ protocol: /^https?$/ }).optional(),
  priceTimeoutMs: positiveInt.max(60_000).default(5000),
  notificationFromAddress: z.email().optional(),
  retentionDays: positiveInt.max(3650).optional(),
});

export function lendingSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): LendingSettings {
  const raw = Object.fromEntries(
    Object.entries(SETTING_NAMES).map(([key, name]) => [key, env[name] === '' ? undefined : env[name]]),
  );
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const key = issue.path[0] as keyof typeof SETTING_NAMES;
      return `${SETTING_NAMES[key]}=${JSON.stringify(raw[key])}: ${issue.message}`;
    });
    throw new Error(`invalid settings: ${problems.join('; ')}`);
  }
  return {
    priceUrl: parsed.data.priceUrl,
    priceTimeoutMs: parsed.data.priceTimeoutMs,
    notificationFromAddress: parsed.data.notificationFromAddress,
    retentionDays: parsed.data.retentionDays,
  };
}
