import type { FetchReadyWaker } from '../aws/waker.js';
import { ConsoleInputError, startConsole } from '../console/server.js';
import type { LendingTracker } from '../job-types/index.js';
import { errorMessage } from '../jobs/errors.js';
import { schedules } from '../schedules/definitions.js';
import { UsageError } from './args.js';
import type { CliIo } from './io.js';

/** `lana-jobs console`: the web console over the command's database (local or `--data-api`), until Ctrl-C. */
export async function runConsoleCommand(options: {
  tracker: LendingTracker;
  io: CliIo;
  description: string;
  port: number;
  host?: string;
  token?: string;
  /** With `--data-api` and JOBS_BUS_NAME: wakes fetch-ready after an enqueue, retry or resume. */
  waker?: FetchReadyWaker;
  stopSignal?: AbortSignal;
}): Promise<number> {
  const running = await startConsole({
    tracker: options.tracker,
    schedules,
    port: options.port,
    host: options.host,
    token: options.token,
    description: options.description,
    wake: options.waker
      ? (due) =>
          options.waker!.wake((err) =>
            options.io.stderr.write(
              `warning: could not wake fetch-ready (${errorMessage(err)}); ${due} at its next minute\n`,
            ),
          )
      : undefined,
  }).catch((err: unknown) => {
    throw err instanceof ConsoleInputError ? new UsageError(err.message) : err;
  });
  options.io.stdout.write(`console: ${running.url} (${options.description}); Ctrl-C stops it\n`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    options.stopSignal?.addEventListener('abort', stop, { once: true });
  });
  await running.close();
  return 0;
}
