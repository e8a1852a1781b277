import type { Database } from '../db/port.js';
import {
  castVote,
  createApprovalProcess,
  createDemoPortfolio,
  ensureDemoGovernance,
} from '../domain/index.js';
import type { LendingRegistry, LendingTracker } from '../job-types/index.js';
import { previousUtcDay } from '../job-types/index.js';
import type { JobServices } from '../job-types/services.js';
import { retrySchedule } from '../jobs/retry-policy.js';
import { latestTick } from '../schedules/cron.js';
import { schedules, tickKey } from '../schedules/definitions.js';
import type { LocalServices } from './local-services.js';
import type { Logger } from './logger.js';
import type { Worker } from './worker.js';

/**
 * Said before the worker starts: the default retry rule and the types that use it, and the failure to come
 * (the schedule fires a valuation the moment the worker starts, and the price feed fails its first request).
 */
export function narrateDemoAhead(registry: LendingRegistry, logger: Logger): void {
  const defaultRule = registry
    .list()
    .filter((t) => retrySchedule(t.retry).join() === '120,240,480,960,1920')
    .map((t) => t.type);
  logger.info('demo: retry rule: after failed attempt n, the next try is 2^n minutes later, capped at 32', {
    delays: '2m, 4m, 8m, 16m, 32m',
    types: defaultRule.join(', '),
  });
  const sync = registry.require('sync');
  logger.info(
    'demo: the first portfolio valuation (sync) will get a 503 from the price feed: watch its attempt fail and be retried',
    { syncRetryDelays: retrySchedule(sync.retry).map(humanDelay).join(', ') },
  );
}

/**
 * `npm start`'s demo: create a few facilities (once), then exercise each job type for real: committee votes
 * whose deciding vote enqueues approval processing in the same transaction, interest accrual for
 * yesterday, the payment-reminder sweep (which enqueues a notification), and a portfolio valuation whose
 * first price request fails, so its retry schedule shows. The worker keeps running afterwards.
 */
export async function runDemo(deps: {
  db: Database;
  tracker: LendingTracker;
  logger: Logger;
  worker: Worker<LendingRegistry['schemas'], JobServices>;
  local: LocalServices;
  stopSignal: AbortSignal;
}): Promise<void> {
  const { db, tracker, logger } = deps;
  await explainCatchUpTick(tracker, logger);
  const existing = await db.query<{ n: number }>('SELECT count(*)::integer AS n FROM credit_facilities');
  if (existing.rows[0]!.n === 0) {
    const portfolio = await createDemoPortfolio(db, tracker);
    logger.info('demo: created credit facilities', { facilities: portfolio.facilityIds.length });
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

  const sync = tracker.registry.require('sync');
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

  // Let this first round settle, then show where things stand.
  await Promise.race([deps.worker.idle(), new Promise((r) => setTimeout(r, 10_000))]);
  if (deps.stopSignal.aborted) return;
  const stats = await tracker.stats();
  logger.info('demo: first round done', {
    counts: Object.fromEntries(stats.counts.map((c) => [`${c.jobType}/${c.status}`, c.count])),
    outbox: deps.local.outboxFile,
  });
  logger.info(
    `the worker keeps running (the valuation retries ${humanDelay(retrySchedule(sync.retry)[0] ?? 0)} after its failure); try \`npx lana-jobs stats\` in another terminal; Ctrl-C to stop`,
  );
}

function humanDelay(seconds: number): string {
  return seconds < 60 ? `${seconds}s` : seconds % 60 === 0 ? `${seconds / 60}m` : `${seconds}s`;
}

/**
 * The worker fires each schedule's latest tick when it starts, so a midnight that passed while nothing ran
 * is caught up: say so when it just happened, or a first-time user wonders where that accrual came from.
 */
async function explainCatchUpTick(tracker: LendingTracker, logger: Logger): Promise<void> {
  const now = new Date();
  for (const schedule of schedules) {
    if (schedule.expression.kind !== 'cron' || schedule.expression.hour === '*') continue;
    const tick = latestTick(schedule.expression, now);
    if (!tick) continue;
    const minute = new Date(Math.floor(tick.getTime() / 60_000) * 60_000);
    const key = tickKey(schedule, minute);
    const jobs = await tracker.listJobs({ limit: 20 });
    const fired = jobs.find((j) => j.idempotencyKey === key);
    if (!fired || now.getTime() - fired.createdAt.getTime() > 60_000) continue;
    logger.info(
      `demo: the worker just fired the missed ${schedule.name} tick of ${minute.toISOString()} (catch-up: a schedule's latest tick runs once, even if nothing was running at that time)`,
      { schedule: schedule.description, type: fired.jobType, id: fired.id },
    );
  }
}
