import { expect, test } from 'vitest';
import { servicesFromEnv } from '../../functions/lib/services.js';
import { lendingSettingsFromEnv } from '../../shared/domain/settings.js';
import { createJobTypeRegistry } from '../../shared/job-types/index.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { createTestDatabase } from '../support/database.js';

test('one set of names for the local runtime and the Lambda functions, with defaults', () => {
  expect(lendingSettingsFromEnv({})).toEqual({
    priceUrl: undefined,
    priceTimeoutMs: 5000,
    notificationFromAddress: undefined,
    retentionDays: undefined,
    extraPriceUrls: [],
    maxPriceJump: '0.2',
    maxQuoteAgeSeconds: 300,
    upgradeBuffer: '0.05',
    priceAgreement: '0.02',
    priceConfirmRuns: 3,
    maxValuationAgeSeconds: 900,
  });
  expect(
    lendingSettingsFromEnv({
      LANA_PRICE_URL: 'https://prices.example/btc?vs=usd',
      LANA_PRICE_TIMEOUT_MS: '2500',
      LANA_NOTIFICATION_FROM_ADDRESS: 'loans@bank.example',
      LANA_JOB_RETENTION_DAYS: '90',
      LANA_PRICE_URLS_EXTRA: 'https://a.example/p, https://b.example/p',
      LANA_PRICE_MAX_JUMP: '0.15',
      LANA_PRICE_MAX_AGE_SECONDS: '120',
      LANA_COLLATERAL_UPGRADE_BUFFER: '0.1',
      LANA_PRICE_AGREEMENT: '0.01',
      LANA_PRICE_CONFIRM_RUNS: '5',
      LANA_VALUATION_MAX_AGE_SECONDS: '600',
    }),
  ).toEqual({
    priceUrl: 'https://prices.example/btc?vs=usd',
    priceTimeoutMs: 2500,
    notificationFromAddress: 'loans@bank.example',
    retentionDays: 90,
    extraPriceUrls: ['https://a.example/p', 'https://b.example/p'],
    maxPriceJump: '0.15',
    maxQuoteAgeSeconds: 120,
    upgradeBuffer: '0.1',
    priceAgreement: '0.01',
    priceConfirmRuns: 5,
    maxValuationAgeSeconds: 600,
  });
  // An empty variable is an unset one.
  expect(lendingSettingsFromEnv({ LANA_PRICE_TIMEOUT_MS: '' }).priceTimeoutMs).toBe(5000);
});

test('a malformed value stops start-up with an error naming the variable and the value', () => {
  expect(() => lendingSettingsFromEnv({ LANA_PRICE_TIMEOUT_MS: '5s' })).toThrow(/LANA_PRICE_TIMEOUT_MS="5s"/);
  expect(() => lendingSettingsFromEnv({ LANA_JOB_RETENTION_DAYS: '0' })).toThrow(
    /LANA_JOB_RETENTION_DAYS="0"/,
  );
  expect(() => lendingSettingsFromEnv({ LANA_PRICE_URL: 'ftp://prices.example' })).toThrow(/LANA_PRICE_URL/);
  expect(() => lendingSettingsFromEnv({ LANA_PRICE_MAX_JUMP: '20%' })).toThrow(/LANA_PRICE_MAX_JUMP="20%"/);
  for (const age of ['0', '5m', '86401'])
    expect(() => lendingSettingsFromEnv({ LANA_PRICE_MAX_AGE_SECONDS: age })).toThrow(
      `LANA_PRICE_MAX_AGE_SECONDS="${age}"`,
    );
  expect(() => lendingSettingsFromEnv({ LANA_COLLATERAL_UPGRADE_BUFFER: '1.5' })).toThrow(
    /LANA_COLLATERAL_UPGRADE_BUFFER="1.5"/,
  );
  expect(() => lendingSettingsFromEnv({ LANA_PRICE_URLS_EXTRA: 'https://a.example, nope' })).toThrow(
    /LANA_PRICE_URLS_EXTRA/,
  );
  expect(() => lendingSettingsFromEnv({ LANA_PRICE_AGREEMENT: '2%' })).toThrow(/LANA_PRICE_AGREEMENT="2%"/);
  for (const runs of ['1', '101', 'three'])
    expect(() => lendingSettingsFromEnv({ LANA_PRICE_CONFIRM_RUNS: runs })).toThrow(
      `LANA_PRICE_CONFIRM_RUNS="${runs}"`,
    );
  for (const age of ['59', '86401', '15m'])
    expect(() => lendingSettingsFromEnv({ LANA_VALUATION_MAX_AGE_SECONDS: age })).toThrow(
      `LANA_VALUATION_MAX_AGE_SECONDS="${age}"`,
    );
  expect(() => lendingSettingsFromEnv({ LANA_NOTIFICATION_FROM_ADDRESS: 'loans' })).toThrow(
    /LANA_NOTIFICATION_FROM_ADDRESS="loans"/,
  );
});

test('on AWS an executor builds only its type’s service, from only the settings its type declares', async () => {
  const t = await createTestDatabase();
  try {
    const registry = createJobTypeRegistry();
    const runtime = { db: t.db, registry, tracker: new JobTracker({ db: t.db, registry }) };
    // The valuation needs its price source, the notifications their sender: each says which is missing.
    expect(() =>
      servicesFromEnv(runtime, 'sync', { LANA_NOTIFICATION_FROM_ADDRESS: 'loans@bank.example' }),
    ).toThrow(/LANA_PRICE_URL is not set/);
    expect(() =>
      servicesFromEnv(runtime, 'notification', { LANA_PRICE_URL: 'https://prices.example' }),
    ).toThrow(/LANA_NOTIFICATION_FROM_ADDRESS is not set/);
    const sync = servicesFromEnv(runtime, 'sync', { LANA_PRICE_URL: 'https://prices.example' });
    expect(Object.keys(sync)).toEqual(['portfolio']);
    expect(typeof sync.portfolio.revalue).toBe('function');
    // Types that need no setting build with none.
    for (const [type, key] of [
      ['interest-accrual', 'credit'],
      ['approval-processing', 'approvals'],
      ['payment-reminders', 'reminders'],
      ['maintenance', 'maintenance'],
    ] as const) {
      expect(Object.keys(servicesFromEnv(runtime, type, {})), type).toEqual([key]);
    }
    // Another service is refused, naming the declaration, never a silent default.
    const credit = servicesFromEnv(runtime, 'interest-accrual', {});
    expect(() => credit.notifications).toThrow(
      /the interest-accrual executor builds only its credit service; notifications is not declared for it/,
    );
    expect(() => servicesFromEnv(runtime, 'not-a-type', {})).toThrow(
      /no job service is declared for not-a-type/,
    );
  } finally {
    await t.drop();
  }
});
