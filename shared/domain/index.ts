import type { Database } from '../db/port.js';
import type { JobServices } from '../job-types/services.js';
import { createMaintenanceService } from '../jobs/maintenance.js';
import type { JobTracker } from '../jobs/tracker.js';
import { createApprovalService, type LendingApprovalService } from './approvals.js';
import { createCreditService, type LendingCreditService } from './credit.js';
import { createNotificationService, type LendingNotificationService } from './notifications.js';
import type { Notifier } from './notifier.js';
import { createPortfolioService, type LendingPortfolioService } from './portfolio.js';
import { createHttpPriceSource, type PriceSource } from './price-source.js';
import { createReminderService, type LendingReminderService } from './reminders.js';
import type { LendingSettings } from './settings.js';

export {
  castVote,
  createApprovalProcess,
  createCommittee,
  recordVote,
  setApprovalPolicy,
  withdrawApprovalProcess,
} from './approvals.js';
export { createDemoPortfolio, ensureDemoGovernance } from './demo-portfolio.js';
export { LendingInputError } from './errors.js';
export { createFileNotifier, createSesNotifier, type Notifier } from './notifier.js';
export {
  listObligations,
  type Obligation,
  type ObligationStatus,
  obligationStatus,
  type Repayment,
  type RepaymentResult,
  recordRepayment,
} from './obligations.js';
export { acceptPriceByHand } from './portfolio.js';
export {
  createHttpPriceSource,
  type PriceQuote,
  type PriceSource,
  PriceSourceError,
} from './price-source.js';

export interface JobServicesDeps {
  db: Database;
  /** Follow-up jobs (margin calls, reminders) and retention go through the job tracker. */
  tracker: Pick<JobTracker, 'enqueueUntyped' | 'pruneFinished' | 'clock'>;
  notifier: Notifier;
  /** One source or several (the price is their median; see `createPortfolioService`). */
  priceSource: PriceSource | readonly PriceSource[];
  /** Share of the reference price a quote may be from it before the move needs confirming (default 0.2). */
  maxPriceJump?: string;
  /** How far apart quotes may be and still agree (default 0.02). */
  priceAgreement?: string;
  /** Consecutive agreeing runs a move beyond the jump guard needs (default 3). */
  priceConfirmRuns?: number;
  /** How long an accepted price backs a disbursal, in seconds (default 900). */
  maxValuationAgeSeconds?: number;
  /** How old a price quote may be, in seconds (default 300). */
  maxQuoteAgeSeconds?: number;
  /** Cover above a level needed to move back up a collateralization state (default 0.05). */
  upgradeBuffer?: string;
  retentionDays?: number;
}

/**
 * The valuation's part of the services' dependencies, from the settings: one HTTP source per price URL
 * and the settings' guards. The local runtime and the Lambda executors both build it here.
 */
export function valuationDeps(
  settings: LendingSettings,
  priceUrls: readonly string[],
): Pick<
  JobServicesDeps,
  | 'priceSource'
  | 'maxPriceJump'
  | 'priceAgreement'
  | 'priceConfirmRuns'
  | 'maxValuationAgeSeconds'
  | 'maxQuoteAgeSeconds'
  | 'upgradeBuffer'
> {
  return {
    priceSource: priceUrls.map((url) => createHttpPriceSource({ url, timeoutMs: settings.priceTimeoutMs })),
    maxPriceJump: settings.maxPriceJump,
    priceAgreement: settings.priceAgreement,
    priceConfirmRuns: settings.priceConfirmRuns,
    maxValuationAgeSeconds: settings.maxValuationAgeSeconds,
    maxQuoteAgeSeconds: settings.maxQuoteAgeSeconds,
    upgradeBuffer: settings.upgradeBuffer,
  };
}

/** The job services with the domain's results typed; assignable to `JobServices`. */
export interface LendingJobServices extends JobServices {
  approvals: LendingApprovalService;
  credit: LendingCreditService;
  notifications: LendingNotificationService;
  reminders: LendingReminderService;
  portfolio: LendingPortfolioService;
}

/** What `createJobService` needs: the notifier only for `notifications`, the price source only for `portfolio`. */
export type OneJobServiceDeps = Omit<JobServicesDeps, 'notifier' | 'priceSource'> &
  Partial<Pick<JobServicesDeps, 'notifier' | 'priceSource'>>;

/**
 * One job service, built alone: an executor on AWS builds only its type's, so it needs only that one's
 * settings (an executor that sends no e-mail has no sender). A dependency the service needs and `deps`
 * lacks is an error naming it.
 */
export function createJobService<K extends keyof LendingJobServices>(
  key: K,
  deps: OneJobServiceDeps,
): LendingJobServices[K] {
  const need = <T>(value: T | undefined, what: string): T => {
    if (value === undefined) throw new Error(`the ${key} job service needs ${what}`);
    return value;
  };
  const build: { [P in keyof LendingJobServices]: () => LendingJobServices[P] } = {
    approvals: () => createApprovalService(deps.db),
    credit: () => createCreditService(deps.db),
    notifications: () => createNotificationService(deps.db, need(deps.notifier, 'a notifier')),
    reminders: () => createReminderService({ db: deps.db, jobs: deps.tracker }),
    portfolio: () =>
      createPortfolioService({
        db: deps.db,
        jobs: deps.tracker,
        priceSource: need(deps.priceSource, 'a price source'),
        maxPriceJump: deps.maxPriceJump,
        priceAgreement: deps.priceAgreement,
        priceConfirmRuns: deps.priceConfirmRuns,
        maxValuationAgeSeconds: deps.maxValuationAgeSeconds,
        maxQuoteAgeSeconds: deps.maxQuoteAgeSeconds,
        upgradeBuffer: deps.upgradeBuffer,
      }),
    maintenance: () => createMaintenanceService(deps.tracker, { retentionDays: deps.retentionDays }),
  };
  return build[key]();
}

/** Everything the job types' executors need, on real tables. Adapters build this once. */
export function createJobServices(deps: JobServicesDeps): LendingJobServices {
  return {
    approvals: createJobService('approvals', deps),
    credit: createJobService('credit', deps),
    notifications: createJobService('notifications', deps),
    reminders: createJobService('reminders', deps),
    portfolio: createJobService('portfolio', deps),
    maintenance: createJobService('maintenance', deps),
  };
}
