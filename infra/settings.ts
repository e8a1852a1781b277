import { duplicatePriceUrl, lendingSettingsFromEnv, SETTING_NAMES } from '../shared/domain/settings.js';
import { RATE_LIMITS_VARIABLE, rateLimitsFromText } from '../shared/jobs/registry.js';
import type { JobsStackProps } from './jobs-stack.js';

/**
 * The stack's settings, read from CDK context (`-c key=value`, or the `context` of cdk.json /
 * cdk.context.json). Two have no default, because no default is right for a real deployment: the SES
 * sender of notifications and the price source. Synth fails naming the missing key.
 */
export const REQUIRED_CONTEXT = {
  notificationFromAddress: 'notificationFromAddress',
  priceSourceUrl: 'priceSourceUrl',
} as const;

/** Domains reserved for documentation and testing (RFC 2606, RFC 6761): mail to them goes nowhere. */
const RESERVED_DOMAIN = /(^|\.)(example\.(com|net|org)|example|test|invalid|localhost)$/i;

export class StackSettingError extends Error {
  override name = 'StackSettingError';
}

/** The SES sender: required, an address, and not on a reserved (example) domain. */
export function validateSender(value: string | undefined): string {
  const key = REQUIRED_CONTEXT.notificationFromAddress;
  if (value === undefined || value.trim() === '')
    throw new StackSettingError(
      `missing context key "${key}": the SES-verified sender of notifications (-c ${key}=no-reply@your-domain)`,
    );
  const match = /^[^@\s]+@([^@\s]+\.[^@\s]+)$/.exec(value);
  if (!match) throw new StackSettingError(`context key "${key}" must be an e-mail address (got "${value}")`);
  if (RESERVED_DOMAIN.test(match[1]!))
    throw new StackSettingError(
      `context key "${key}" is on a reserved example domain (${match[1]}): SES cannot send as "${value}"; give your verified sender`,
    );
  return value;
}

/** The BTC/USD price source: required, an https URL. */
export function validatePriceSourceUrl(value: string | undefined): string {
  const key = REQUIRED_CONTEXT.priceSourceUrl;
  if (value === undefined || value.trim() === '')
    throw new StackSettingError(
      `missing context key "${key}": the https URL portfolio valuation reads the BTC/USD price from (-c ${key}=https://...)`,
    );
  return validateHttpsUrl(key, value);
}

function validateHttpsUrl(key: string, value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new StackSettingError(`context key "${key}" must be a URL (got "${value}")`);
  }
  if (url.protocol !== 'https:')
    throw new StackSettingError(`context key "${key}" must be an https URL (got "${value}")`);
  return value;
}

/**
 * How portfolio valuation judges prices, all optional (the code's defaults apply): more price sources
 * beside `priceSourceUrl` (the price is the median of those that answer), the share a price may jump
 * unless two sources agree, how old a quote may be, and the buffer before a facility moves back up a state.
 */
export interface ValuationSettings {
  extraPriceSourceUrls?: readonly string[];
  maxPriceJump?: string;
  maxPriceAgeSeconds?: number;
  collateralUpgradeBuffer?: string;
  priceAgreement?: string;
  priceConfirmRuns?: number;
  maxValuationAgeSeconds?: number;
}

/** Each valuation setting's context key (and JobsStackProps field), with the variable the executors read. */
const VALUATION_VARIABLES = {
  extraPriceSourceUrls: SETTING_NAMES.extraPriceUrls,
  maxPriceJump: SETTING_NAMES.maxPriceJump,
  maxPriceAgeSeconds: SETTING_NAMES.maxQuoteAgeSeconds,
  collateralUpgradeBuffer: SETTING_NAMES.upgradeBuffer,
  priceAgreement: SETTING_NAMES.priceAgreement,
  priceConfirmRuns: SETTING_NAMES.priceConfirmRuns,
  maxValuationAgeSeconds: SETTING_NAMES.maxValuationAgeSeconds,
} as const satisfies Record<keyof ValuationSettings, string>;

/**
 * The executors' environment for the valuation settings that are given. Each value is checked at synth by
 * the same parser the functions run at start-up, so a value the functions would refuse fails the synth,
 * naming the context key, instead of every valuation after the deploy.
 */
export function valuationEnvironment(
  settings: ValuationSettings & { priceSourceUrl?: string },
): Record<string, string> {
  const env: Record<string, string> = {};
  const duplicate = duplicatePriceUrl([
    ...(settings.priceSourceUrl ? [settings.priceSourceUrl] : []),
    ...(settings.extraPriceSourceUrls ?? []),
  ]);
  if (duplicate) {
    throw new StackSettingError(
      `context key "extraPriceSourceUrls" names "${duplicate[1]}", the same price source as "${duplicate[0]}": ` +
        'priceSourceUrl and extraPriceSourceUrls must name distinct sources (one source counted twice agrees with itself)',
    );
  }
  for (const key of Object.keys(VALUATION_VARIABLES) as (keyof ValuationSettings)[]) {
    const value = settings[key];
    if (value === undefined) continue;
    const variable = VALUATION_VARIABLES[key];
    let text: string;
    if (typeof value === 'object') {
      if (value.length === 0) continue;
      text = value.map((url) => validateHttpsUrl(key, url)).join(',');
    } else {
      text = String(value);
    }
    try {
      lendingSettingsFromEnv({ [variable]: text });
    } catch (err) {
      // The parser names the variable; the deployer set the context key, named instead.
      const reason = (err as Error).message.replace(/^invalid settings: /, '').replaceAll(`${variable}=`, '');
      throw new StackSettingError(`context key "${key}" is not valid (${reason})`);
    }
    env[variable] = text;
  }
  return env;
}

/**
 * The functions' environment for the stack's rate limits: `notificationRateLimit` (notifications a second,
 * the account's SES quota) replaces the type's own. Checked at synth by the parser the functions run.
 */
export function rateLimitEnvironment(notificationRateLimit: number | undefined): Record<string, string> {
  if (notificationRateLimit === undefined) return {};
  const text = `notification=${notificationRateLimit}/1`;
  try {
    rateLimitsFromText(text);
  } catch {
    throw new StackSettingError(
      `context key "notificationRateLimit" must be an integer from 1 to 10000 (got "${notificationRateLimit}")`,
    );
  }
  return { [RATE_LIMITS_VARIABLE]: text };
}

type ContextReader = (key: string) => unknown;

/** JobsStackProps from context; throws naming the key of a missing or malformed setting. */
export function stackPropsFromContext(read: ContextReader): JobsStackProps {
  const text = (name: string): string | undefined => {
    const v = read(name);
    return v === undefined || v === null || v === '' ? undefined : String(v);
  };
  const num = (name: string): number | undefined => {
    const v = text(name);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0)
      throw new StackSettingError(`context key "${name}" must be a non-negative number (got "${v}")`);
    return n;
  };
  /** A count (days, functions, rows): a whole number, as `-c claimBatchSize=30`; `1.5` or `1e3` is a typo. */
  const int = (name: string): number | undefined => {
    const v = text(name);
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v))
      throw new StackSettingError(`context key "${name}" must be a whole number, 0 or more (got "${v}")`);
    return Number(v);
  };
  const bool = (name: string): boolean | undefined => {
    const v = text(name);
    if (v === undefined) return undefined;
    if (v !== 'true' && v !== 'false')
      throw new StackSettingError(`context key "${name}" must be true or false (got "${v}")`);
    return v === 'true';
  };
  return {
    description: 'lana-jobs: PostgreSQL-backed background jobs (Aurora Data API, EventBridge, Lambda)',
    notificationFromAddress: validateSender(text(REQUIRED_CONTEXT.notificationFromAddress)),
    priceSourceUrl: validatePriceSourceUrl(text(REQUIRED_CONTEXT.priceSourceUrl)),
    notificationConfigurationSet: text('notificationConfigurationSet'),
    deletionProtection: bool('deletionProtection'),
    minCapacity: num('minCapacity'),
    maxCapacity: num('maxCapacity'),
    backupRetentionDays: int('backupRetentionDays'),
    reserveConcurrency: bool('reserveConcurrency'),
    executorReservedConcurrency: int('executorReservedConcurrency'),
    fetchReadyReservedConcurrency: int('fetchReadyReservedConcurrency'),
    claimBatchSize: int('claimBatchSize'),
    maxClaimsPerRun: int('maxClaimsPerRun'),
    defaultTypeConcurrency: int('defaultTypeConcurrency'),
    alarmEmail: text('alarmEmail'),
    jobRetentionDays: int('jobRetentionDays'),
    extraPriceSourceUrls: text('extraPriceSourceUrls')
      ?.split(',')
      .map((url) => url.trim())
      .filter((url) => url.length > 0),
    maxPriceJump: text('maxPriceJump'),
    maxPriceAgeSeconds: int('maxPriceAgeSeconds'),
    collateralUpgradeBuffer: text('collateralUpgradeBuffer'),
    priceAgreement: text('priceAgreement'),
    priceConfirmRuns: num('priceConfirmRuns'),
    maxValuationAgeSeconds: num('maxValuationAgeSeconds'),
    notificationRateLimit: num('notificationRateLimit'),
  };
}
