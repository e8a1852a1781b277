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
  extraPriceUrls: 'LANA_PRICE_URLS_EXTRA',
  maxPriceJump: 'LANA_PRICE_MAX_JUMP',
  maxQuoteAgeSeconds: 'LANA_PRICE_MAX_AGE_SECONDS',
  upgradeBuffer: 'LANA_COLLATERAL_UPGRADE_BUFFER',
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
  /**
   * More BTC/USD sources beside `priceUrl`, comma-separated: the valuation uses the median of those that
   * answer, and needs two answers once two or more are configured.
   */
  extraPriceUrls: string[];
  /** Share of the last accepted price a new price may move unless two sources agree. Default "0.2". */
  maxPriceJump: string;
  /** How old a price quote may be before the valuation refuses it, in seconds. Default 300. */
  maxQuoteAgeSeconds: number;
  /** Cover above a level needed to move back up a collateralization state. Default "0.05". */
  upgradeBuffer: string;
}

const positiveInt = z.coerce.number().int().positive();
/** A decimal share strictly between 0 and 1, kept as text (it reaches SQL as an exact numeric). */
const share = z
  .string()
  .regex(/^0?\.\d+$/, 'expected a decimal share such as 0.2')
  .refine((s) => Number(s) > 0 && Number(s) < 1, 'expected a share between 0 and 1');
const schema = z.object({
  priceUrl: z.url({ protocol: /^https?$/ }).optional(),
  priceTimeoutMs: positiveInt.max(60_000).default(5000),
  notificationFromAddress: z.email().optional(),
  retentionDays: positiveInt.max(3650).optional(),
  extraPriceUrls: z
    .string()
    .transform((text) =>
      text
        .split(',')
        .map((u) => u.trim())
        .filter((u) => u.length > 0),
    )
    .pipe(z.array(z.url({ protocol: /^https?$/ })))
    .default([]),
  maxPriceJump: share.default('0.2'),
  maxQuoteAgeSeconds: positiveInt.max(86_400).default(300),
  upgradeBuffer: share.default('0.05'),
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
    extraPriceUrls: parsed.data.extraPriceUrls,
    maxPriceJump: parsed.data.maxPriceJump,
    maxQuoteAgeSeconds: parsed.data.maxQuoteAgeSeconds,
    upgradeBuffer: parsed.data.upgradeBuffer,
  };
}
