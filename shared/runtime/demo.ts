import type { Database } from '../db/port.js';
import { castVote, createApprovalProcess, ensureDemoGovernance, seedDemoData } from '../domain/index.js';
import type { SeedRegistry, SeedTracker } from '../job-types/index.js';
import { previousUtcDay } from '../job-types/index.js';
import type { JobServices } from '../job-types/services.js';
import { retrySchedule } from '../jobs/retry-policy.js';
import type { LocalServices } from './local-services.js';
import type { Logger } from './logger.js';
import type { Worker } from './worker.js';

/**
 * `npm start`'s demo: seed a few facilities (once), then exercise each job type for real: committee votes
 * whose deciding vote enqueues approval processing in the same transaction, interest accrual for
 * yesterday, the payment-reminder sweep (which enqueues a notification), and a portfolio valuation whose
 * first price request fails, so its retry schedule shows. The worker keeps running afterwards.
 */
export async function runDemo(deps: {
  db: Database;
  tracker: SeedTracker;
  logger: Logger;
  worker: Worker<SeedRegistry['schemas'], JobServices>;
  local: LocalServices;
  stopSignal: AbortSignal;
}): Promise<void> {
  const { db, tracker, logger } = deps;
  const existing = await db.query<{ n: number }>('SELECT count(*)::integer AS n FROM credit_facilities');
  if (existing.rows[0]!.n === 0) {
    const seeded = await seedDemoData(db, tracker);
    logger.info('demo: seeded credit facilities', { facilities: seeded.facilityIds.length });
  }
  // A fresh approval process each run, on the active facility with the most undrawn limit.
  const facility = await db.query<{ id: string }>(
    `SELECT id FROM credit_facilities WHERE status = 'active'
     ORDER BY facility_limit_cents - drawn_principal_cents - reserved_cents DESC LIMIT 1`,
  );
  await ensureDemoGovernance(db);
  const processId = await createApprovalProcess(db, tracker, {
    facilityId: facility.rows[0]!.id,
    amountCents: 250_000n,
  });
  logger.info('demo: approval process opened (2 of 3 approvals needed)', { processId });
  await castVote(db, tracker, { processId, voter: 'risk-officer', approve: true });
  const decisive = await castVote(db, tracker, { processId, voter: 'credit-committee-chair', approve: true });
  logger.info('demo: the deciding vote enqueued approval-processing in the same transaction', {
    decided: decisive.decided,
    jobId: decisive.jobId,
  });

  const yesterday = previousUtcDay(new Date());
  const today = new Date().toISOString().slice(0, 10);
  const enqueued = await tracker.enqueueUntyped([
    {
      type: 'interest-accrual',
      payload: { date: yesterday },
      idempotencyKey: `demo:interest-accrual:${yesterday}`,
    },
    { type: 'payment-reminders', payload: { date: today } },
    { type: 'sync', payload: { target: 'portfolio-valuation' } },
  ]);
  for (const { job, created } of enqueued) {
    logger.info(`demo: enqueued ${job.jobType}`, { id: job.id, created });
  }
  const sync = tracker.registry.require('sync');
  logger.info('demo: the valuation will fail once (the price feed answers 503) and retry', {
    retryDelays: retrySchedule(sync.retry)
      .map((s) => `${s}s`)
      .join(', '),
  });

  // Let this first round settle, then show where things stand.
  await Promise.race([deps.worker.idle(), new Promise((r) => setTimeout(r, 10_000))]);
  if (deps.stopSignal.aborted) return;
  const stats = await tracker.stats();
  logger.info('demo: first round done', {
    counts: Object.fromEntries(stats.counts.map((c) => [`${c.jobType}/${c.status}`, c.count])),
    outbox: deps.local.outboxFile,
  });
  logger.info(
    'the worker keeps running (the valuation retries in about a minute); try `npx jobs stats` in another terminal; Ctrl-C to stop',
  );
}
