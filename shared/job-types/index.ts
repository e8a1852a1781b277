import { JobTypeRegistry } from '../jobs/registry.js';
import {
  approvalProcessingPayload,
  interestAccrualPayload,
  maintenancePayload,
  notificationPayload,
  paymentRemindersPayload,
  syncPayload,
} from './payloads.js';
import type { JobServices } from './services.js';

/** The day before `date`'s UTC day, as YYYY-MM-DD. */
export function previousUtcDay(date: Date): string {
  const d = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate() - 1));
  return d.toISOString().slice(0, 10);
}

/**
 * The lending platform's job types: four that do its work, plus two that keep them running: the daily payment-reminder sweep (which
 * enqueues `notification` jobs) and `maintenance` (retention). The registry is the single list: the local runtime, the Lambda executors
 * (one function per type) and the CDK stack (one rule and one function per type) are all generated from it.
 */
export function createJobTypeRegistry() {
  return new JobTypeRegistry<Record<never, never>, JobServices>()
    .register({
      type: 'approval-processing',
      description:
        'Concludes an approval process whose votes are in; executes the disbursal when approved. ' +
        'With {"sweep":"expire"}: expires open processes past their policy\'s time',
      schema: approvalProcessingPayload,
      timeoutSeconds: 60,
      concurrency: 10,
      // One job per facility at a time: a facility's disbursals are decided one after another, in the
      // order they came, each checking the limit and the collateral cover against the drawn principal the
      // one before left. Run side by side, the second would only wait on the first's lock on the facility
      // row, holding an executor (and a connection) idle meanwhile. Other facilities' jobs flow. The sweep
      // carries no facility (it expires processes across all of them) and runs without a key.
      concurrencyKey: { field: 'facilityId', limit: 1 },
      execute: async (payload, ctx) => {
        if (payload.processId !== undefined)
          await ctx.services.approvals.processApproval(payload.processId, ctx.signal, payload.facilityId);
        else await ctx.services.approvals.expireOverdueProcesses(ctx.signal);
        return undefined;
      },
    })
    .register({
      type: 'interest-accrual',
      description: 'Accrues interest on every facility for each ended day not yet accrued (catches up)',
      schema: interestAccrualPayload,
      timeoutSeconds: 600,
      // Each run writes every facility's missing days: a few at once is plenty, more only contend on the same rows.
      concurrency: 4,
      execute: async ({ date }, ctx) => {
        // No date: up to yesterday by the database clock (the domain caps any date there too).
        await ctx.services.credit.accrueDailyInterest(date, ctx.signal);
        return undefined;
      },
    })
    .register({
      type: 'notification',
      description: 'Sends a notification (payment reminder, margin call) through the outbox',
      schema: notificationPayload,
      timeoutSeconds: 30,
      // The e-mail provider's sending rate, not the queue, is the bound: SES sends 14 a second by default
      // (the stack's `notificationRateLimit` setting matches it to the account's quota).
      concurrency: 20,
      rateLimit: { limit: 14, perSeconds: 1 },
      execute: async (payload, ctx) => {
        await ctx.services.notifications.send(payload, ctx.signal);
        return undefined;
      },
    })
    .register({
      type: 'sync',
      description: 'Revalues collateral from the BTC/USD price source (portfolio valuation)',
      schema: syncPayload,
      timeoutSeconds: 60,
      // One valuation of the whole portfolio at a time.
      concurrency: 1,
      enqueues: ['notification'], // margin calls
      // A stale price is soon replaced by the next scheduled run: retry quickly, give up sooner.
      retry: { maxAttempts: 4, backoffBaseSeconds: 30, backoffCapSeconds: 240 },
      execute: async ({ manualPriceId }, ctx) => {
        if (manualPriceId) await ctx.services.portfolio.applyManualPrice(manualPriceId, ctx.signal);
        else await ctx.services.portfolio.revalue(ctx.signal);
        return undefined;
      },
    })
    .register({
      type: 'payment-reminders',
      description: 'Enqueues a payment-reminder notification for each payment due in a few days',
      schema: paymentRemindersPayload,
      timeoutSeconds: 120,
      concurrency: 1,
      enqueues: ['notification'],
      execute: async ({ date }, ctx) => {
        await ctx.services.reminders.enqueueDueReminders(
          date ?? new Date().toISOString().slice(0, 10),
          ctx.signal,
        );
        return undefined;
      },
    })
    .register({
      type: 'maintenance',
      description: 'Deletes completed and cancelled jobs past the retention period (failed jobs are kept)',
      schema: maintenancePayload,
      timeoutSeconds: 300,
      concurrency: 1,
      // Housekeeping yields to the business jobs.
      priority: 100,
      execute: async (_payload, ctx) => {
        await ctx.services.maintenance.pruneFinishedJobs(ctx.signal);
        return undefined;
      },
    });
}

/** The lending platform's job-type registry: every job type, its payload schema and executor. */
export type LendingRegistry = ReturnType<typeof createJobTypeRegistry>;
export type { JobServices } from './services.js';

import type { JobTracker } from '../jobs/tracker.js';
import type { JobServices as Services } from './services.js';
/** A tracker over the lending platform's job types. */
export type LendingTracker = JobTracker<LendingRegistry['schemas'], Services>;
