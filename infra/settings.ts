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
    backupRetentionDays: num('backupRetentionDays'),
    reserveConcurrency: bool('reserveConcurrency'),
    executorReservedConcurrency: num('executorReservedConcurrency'),
    fetchReadyReservedConcurrency: num('fetchReadyReservedConcurrency'),
    claimBatchSize: num('claimBatchSize'),
    maxClaimsPerRun: num('maxClaimsPerRun'),
    alarmEmail: text('alarmEmail'),
    jobRetentionDays: num('jobRetentionDays'),
  };
}
