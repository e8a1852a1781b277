import { startConsole } from '../console/server.js';
import { migrate } from '../db/migrate.js';
import { createJobTypeRegistry } from '../job-types/index.js';
import { JobDispatcher } from '../jobs/dispatcher.js';
import { errorMessage } from '../jobs/errors.js';
import { InMemoryMetrics } from '../jobs/metrics.js';
import { JobTracker } from '../jobs/tracker.js';
import type { OpenedDatabase } from '../runtime/database.js';
import { narrateDemoAhead, runDemo } from '../runtime/demo.js';
import { createLocalServices } from '../runtime/local-services.js';
import { createConsoleLogger } from '../runtime/logger.js';
import { type AttemptEvent, Worker } from '../runtime/worker.js';
import { schedules } from '../schedules/definitions.js';
import type { CliIo } from './io.js';

export interface WorkerCommandOptions {
  opened: OpenedDatabase;
  io: CliIo;
  json: boolean;
  concurrency?: number;
  /** `lana-jobs dev`: create demo data, enqueue a job of each type and narrate what happens. */
  demo: boolean;
  /** `lana-jobs dev`: the web console beside the worker (a busy port: a free one instead). */
  console?: { port: number };
  /** Stops the worker (tests); by default SIGINT or SIGTERM does. */
  stopSignal?: AbortSignal;
  /** Where notifications go; default `.lana-jobs/outbox.jsonl` (tests keep theirs out of the checkout). */
  outboxFile?: string;
}

/**
 * `lana-jobs work` and `lana-jobs dev`: migrations, then a worker with the product's job types and schedules, until
 * SIGINT/SIGTERM; then a graceful stop that leaves no job running.
 */
export async function runWorkerCommand(options: WorkerCommandOptions): Promise<number> {
  const logger = createConsoleLogger({ stream: options.io.stderr, json: options.json });
  const { opened } = options;
  const applied = await migrate(opened.db);
  logger.info(`database: ${opened.description}`, applied.length > 0 ? { migrationsApplied: applied } : {});

  const registry = createJobTypeRegistry();
  const metrics = new InMemoryMetrics();
  const tracker = new JobTracker({ db: opened.db, registry, metrics });
  const local = await createLocalServices({
    db: opened.db,
    tracker,
    logger,
    failFirstPriceRequests: options.demo ? 1 : 0,
    outboxFile: options.outboxFile,
  });
  const dispatcher = new JobDispatcher(registry, local.services);
  const pgDb = opened.pg;
  const worker = new Worker({
    tracker,
    dispatcher,
    concurrency: options.concurrency,
    listen: pgDb ? (onNotify) => pgDb.listen('lana_jobs', onNotify) : undefined,
    schedules,
    logger,
    // Every finished attempt on one line, so an operator who enqueues a job sees it run.
    onAttemptRecorded: (event) => logAttempt(logger, event),
  });
  if (options.demo) narrateDemoAhead(registry, logger);
  await worker.start();
  logger.info('worker started', {
    concurrency: options.concurrency ?? 10,
    types: registry.list().map((t) => t.type),
    schedules: schedules.map((s) => s.name),
  });

  const startConsoleOn = (port: number) =>
    startConsole({ tracker, schedules, port, description: opened.description });
  const consoleServer = options.console
    ? await startConsoleOn(options.console.port)
        .catch((err: unknown) => {
          // A second `npm start` finds the first one's port taken: it gets a console all the same.
          if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
          logger.info(
            `port ${options.console!.port} is in use (another npm start?): the console takes a free port`,
          );
          return startConsoleOn(0);
        })
        .catch((err: unknown) => {
          logger.warn(`console not started: ${errorMessage(err)}`);
          return null;
        })
    : null;
  if (consoleServer) logger.info(`console: ${consoleServer.url}`);

  const summary = setInterval(() => {
    const m = metrics.snapshot();
    const done = Object.values(m.outcomes).reduce((n, o) => n + o.completed + o.failed + o.retrying, 0);
    if (done > 0) logger.info('progress', { attemptsFinished: done, ...worker.stats });
  }, 30_000);
  summary.unref();

  const stop = new AbortController();
  const onSignal = (signal: string) => {
    logger.info(`${signal}: stopping (running jobs get a grace period; Ctrl-C again to force)`);
    stop.abort();
  };
  const sigint = () => onSignal('SIGINT');
  const sigterm = () => onSignal('SIGTERM');
  if (!options.stopSignal) {
    process.once('SIGINT', sigint);
    process.once('SIGTERM', sigterm);
  }
  if (options.stopSignal?.aborted) stop.abort();
  else options.stopSignal?.addEventListener('abort', () => stop.abort(), { once: true });

  try {
    if (options.demo) {
      await runDemo({ db: opened.db, tracker, logger, worker, local, stopSignal: stop.signal });
      // The demo wrote a fresh database's worth of pages. Flushed now, while the user reads the narration,
      // they are not left to the shutdown checkpoint, which would hold Ctrl-C for seconds.
      if (opened.embedded && !stop.signal.aborted) await opened.db.query('CHECKPOINT').catch(() => {});
    }
    if (!stop.signal.aborted)
      await new Promise((resolve) => stop.signal.addEventListener('abort', resolve, { once: true }));
  } finally {
    clearInterval(summary);
    await consoleServer?.close();
    await worker.stop();
    await local.close();
    process.off('SIGINT', sigint);
    process.off('SIGTERM', sigterm);
  }
  const state = await tracker.stats();
  const running = state.counts.filter((c) => c.status === 'running').reduce((n, c) => n + c.count, 0);
  logger.info('worker stopped', { runningJobsLeft: running });
  return 0;
}

function logAttempt(logger: ReturnType<typeof createConsoleLogger>, event: AttemptEvent): void {
  const { job, result, status } = event;
  const base = {
    type: job.jobType,
    id: job.id,
    attempt: `${job.attempts}/${job.maxAttempts}`,
    ms: Math.round(result.durationMs),
  };
  if (status === 'completed') logger.info('job completed', base);
  else if (status === 'retrying') {
    const error =
      result.outcome === 'failed' ? result.error : result.outcome === 'retry_later' ? result.reason : '';
    logger.warn('attempt failed; will retry', { ...base, error, nextRunAt: event.nextRunAt });
  } else if (status === 'failed') {
    // The worker itself logs a final failure ('job failed for good') with its error: one line, not two.
    if (result.outcome !== 'failed') logger.error('job failed', base);
  }
  // A discarded result ('fenced_out') is logged by the worker.
}
