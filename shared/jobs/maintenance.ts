import type { JobTracker } from './tracker.js';

/** Completed and cancelled jobs are kept this long by default; failed jobs wait for an operator. */
export const DEFAULT_RETENTION_DAYS = 30;

/**
 * The retention service behind the built-in `maintenance` job: deletes completed and cancelled jobs
 * (with their execution rows) older than the retention period, a bounded number of batches per run, so
 * the queue table and its indexes stay small. Failed jobs stay until `lana-jobs retry` or `lana-jobs purge`.
 */
export function createMaintenanceService(
  tracker: Pick<JobTracker, 'pruneFinished' | 'clock'>,
  options: { retentionDays?: number; batchSize?: number; maxBatchesPerRun?: number } = {},
) {
  const retentionDays = options.retentionDays ?? DEFAULT_RETENTION_DAYS;
  return {
    async pruneFinishedJobs(): Promise<{ deleted: number; before: Date }> {
      const now = tracker.clock.now() ?? new Date();
      const before = new Date(now.getTime() - retentionDays * 86_400_000);
      const deleted = await tracker.pruneFinished({
        before,
        statuses: ['completed', 'cancelled'],
        batchSize: options.batchSize ?? 5000,
        maxBatches: options.maxBatchesPerRun ?? 200,
      });
      return { deleted, before };
    },
  };
}
