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
  priceAgreement: 'LANA_PRICE_AGREEMENT',
  priceConfirmRuns: 'LANA_PRICE_CONFIRM_RUNS',
  maxValuationAgeSeconds: 'LANA_VALUATION_MAX_AGE_SECONDS',
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
  /**
   * How far apart (a share of the lowest) quotes may be and still agree: with fewer than three answers
   * every quote must agree with the others, or the run is refused. Default "0.02".
   */
  priceAgreement: string;
  /**
   * Consecutive runs in which every source answers and all agree that a move beyond the jump guard needs
   * before it is accepted. Default 3.
   */
  priceConfirmRuns: number;
  /** How long an accepted price may back a disbursal, in seconds. Default 900. */
  maxValuationAgeSeconds: number;
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
  priceAgreement: share.default('0.02'),
  priceConfirmRuns: positiveInt.min(2).max(100).default(3),
  maxValuationAgeSeconds: positiveInt.min(60).max(86_400).default(900),
});

/**
 * A price URL in the form that identifies its source: scheme and host lower-cased, default port and
 * fragment dropped (URL parsing does the rest). Two URLs with the same form are one source.
 */
export function normalisePriceUrl(url: string): string {
  const parsed = new URL(url);
  parsed.hash = '';
  return parsed.href;
}

/**
 * The first pair of URLs that are the same source after normalising, if any: a source counted twice
 * agrees with itself, so one wrong answer would pass as two agreeing ones.
 */
export function duplicatePriceUrl(urls: readonly string[]): [string, string] | undefined {
  const seen = new Map<string, string>();
  for (const url of urls) {
    const key = normalisePriceUrl(url);
    const first = seen.get(key);
    if (first !== undefined) return [first, url];
    seen.set(key, url);
  }
  return undefined;
}

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
  const duplicate = duplicatePriceUrl([
    ...(parsed.data.priceUrl ? [parsed.data.priceUrl] : []),
    ...parsed.data.extraPriceUrls,
  ]);
  if (duplicate) {
    throw new Error(
      `invalid settings: ${SETTING_NAMES.extraPriceUrls}=${JSON.stringify(raw.extraPriceUrls)}: "${duplicate[1]}" is ` +
        `the same price source as "${duplicate[0]}" (${SETTING_NAMES.priceUrl} and ${SETTING_NAMES.extraPriceUrls} ` +
        'together must name distinct sources: one source counted twice agrees with itself)',
    );
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
    priceAgreement: parsed.data.priceAgreement,
    priceConfirmRuns: parsed.data.priceConfirmRuns,
    maxValuationAgeSeconds: parsed.data.maxValuationAgeSeconds,
  };
}
