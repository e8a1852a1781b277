import { migrate } from '../db/migrate.js';
import { lendingSettingsFromEnv } from '../domain/settings.js';
import { createJobTypeRegistry, type LendingRegistry, type LendingTracker } from '../job-types/index.js';
import { errorMessage, JobInputError } from '../jobs/errors.js';
import { MAX_ATTEMPTS_RANGE, PRIORITY_RANGE } from '../jobs/job-input.js';
import { JOB_STATUSES, type JobStatus } from '../jobs/model.js';
import { createdJobDueNow, JobTracker } from '../jobs/tracker.js';
import { DatabaseSettingError, type OpenedDatabase, openLocalDatabase } from '../runtime/database.js';
import { createConsoleLogger } from '../runtime/logger.js';
import {
  integerOption,
  type OptionSpec,
  type Parsed,
  parseCommandLine,
  parseDuration,
  requirePositional,
  stringOption,
  textOption,
  UsageError,
} from './args.js';
import { runConsoleCommand } from './console.js';
import { openDataApiFromEnv, wakeFetchReady } from './data-api.js';
import { enqueueInput } from './enqueue.js';
import { formatJob, formatJobList, formatStats, formatTypes, payloadFields, toJson } from './format.js';
import type { CliIo } from './io.js';
import { pauseCommand, pausedTypesForListing, resumeCommand } from './pause.js';
import { acceptPriceCommand } from './price.js';
import { repayCommand } from './repay.js';
import { formatPayloadChanges, retryCommand } from './replay.js';
import { runWorkerCommand } from './work.js';

/** The CLI's name: `jobs` would be shadowed by the shell's built-in `jobs` command. */
export const CLI_NAME = 'lana-jobs';

const GLOBAL_HELP = `Options for every command:
  --json                          machine-readable output
  --database-url URL              PostgreSQL to use (default: DATABASE_URL, else the embedded server)
  --data-api                      use the deployed database through the RDS Data API
                                  (env DATA_API_RESOURCE_ARN, DATA_API_SECRET_ARN, DATA_API_DATABASE;
                                  with JOBS_BUS_NAME, enqueue and retry wake fetch-ready at once)
  -h, --help                      help (\`${CLI_NAME} <command> --help\` for one command)
`;

const USAGE = `Usage: ${CLI_NAME} <command> [options]   (in a checkout: npx ${CLI_NAME} <command>)

Commands:
  migrate                         apply the SQL migrations
  types                           list job types: payload fields, retry settings
  enqueue <type> [--payload JSON] [--at ISO | --in 5m] [--key K] [--priority N] [--max-attempts N]
          [--debounce K --window 30s [--max-wait 5m]]
  list [--status S] [--type T] [--limit N]
  show <id>                       a job with its attempt history
  stats                           counts by status and type (finished: last day), queue depth, failure rate
  retry <id> [--payload JSON] [--by NAME]
                                  put a failed or cancelled job back in the queue (with --payload:
                                  replayed with a new payload, the old one kept in its history)
  purge --status S --older-than D [--type T] [--yes]
                                  delete finished jobs and their history (shows what it would delete
                                  unless --yes)
  cancel <id> [--reason TEXT]     stop a pending, retrying or running job
  pause <type> [--reason TEXT] [--by NAME]
                                  stop claiming a job type's due jobs (running jobs finish)
  resume <type>                   claim a paused type's jobs again
  work [--concurrency N]          run a worker until Ctrl-C
  repay <facility-id> --amount A [--reference R]
                                  record a repayment (settles obligations oldest first)
  dev                             embedded PostgreSQL + migrations + demo + worker + console, until Ctrl-C
  accept-price --price USD --by NAME --reason TEXT
                                  accept a BTC/USD price by hand (audited) and revalue at it
  console [--port 4100] [--host 127.0.0.1] [--token T]
                                  the web console for operators, until Ctrl-C (a host other than
                                  loopback needs a token: --token or env JOBS_CONSOLE_TOKEN)

${GLOBAL_HELP}`;

/** Kept in the job's row: bounded like everything else a command line can write. */
const MAX_REASON_LENGTH = 500;

interface Command {
  /** `<command> --help`: usage line(s) and what each option means. */
  help?: string;
  options: OptionSpec;
  positionals: number;
  /** Commands that only read the registry need no database. */
  needsDatabase: boolean;
  /** Reads the database only when one is named (`--database-url`, `--data-api`, DATABASE_URL). */
  usesNamedDatabase?: boolean;
  run(ctx: CommandContext): Promise<number>;
}

interface CommandContext {
  args: Parsed;
  io: CliIo;
  json: boolean;
  registry: LendingRegistry;
  opened: OpenedDatabase | null;
  /** Only for commands with `needsDatabase`. */
  tracker: LendingTracker;
}

function print(ctx: CommandContext, human: string, data: unknown): void {
  ctx.io.stdout.write(`${ctx.json ? toJson(data) : human}\n`);
}

const commands: Record<string, Command> = {
  migrate: {
    options: {},
    positionals: 0,
    needsDatabase: true,
    async run(ctx) {
      const applied = await migrate(ctx.opened!.db);
      print(ctx, applied.length === 0 ? 'migrations: up to date' : `applied ${applied.join(', ')}`, {
        applied,
      });
      return 0;
    },
  },
  types: {
    help: `${CLI_NAME} types: each job type with its payload fields (from its schema), attempts, retry
delays, timeout, lease and limits (at once, per time, per key: \`1 per facilityId\` runs one job per
facility at a time).`,
    options: {},
    positionals: 0,
    needsDatabase: false,
    usesNamedDatabase: true,
    async run(ctx) {
      const types = ctx.registry.list();
      const paused = ctx.opened ? await pausedTypesForListing(ctx.tracker, ctx.io) : null;
      print(
        ctx,
        formatTypes(types, paused),
        types.map((t) => ({
          ...(paused ? { paused: paused.get(t.type) ?? null } : {}),
          type: t.type,
          description: t.description,
          payload: payloadFields(t.schema),
          retry: t.retry,
          timeoutSeconds: t.timeoutSeconds,
          leaseSeconds: t.leaseSeconds,
          priority: t.priority,
          concurrency: t.concurrency ?? null,
          rateLimit: t.rateLimit ?? null,
          concurrencyKey: t.concurrencyKey ?? null,
        })),
      );
      return 0;
    },
  },
  enqueue: {
    help: `${CLI_NAME} enqueue <type> [options]: add a job (see \`${CLI_NAME} types\` for each payload).
  --payload JSON      the job's payload, a JSON object (default {})
  --at TIME           when to run it: ISO 8601 with a zone, e.g. 2026-12-01T00:00:00Z (a past time: now)
  --in DURATION       or run it after a delay: 30s, 5m, 2h, 1d
  --key KEY           idempotency key: a second enqueue with the same type and key writes nothing
  --priority N        ${PRIORITY_RANGE.min} to ${PRIORITY_RANGE.max}; lower runs first (default: the type's, usually 0)
  --max-attempts N    ${MAX_ATTEMPTS_RANGE.min} to ${MAX_ATTEMPTS_RANGE.max} (default: the type's)
  --debounce KEY      run once after a burst: while the type's job with this key has not started, an
                      enqueue replaces its payload and moves its run to the end of --window
  --window DURATION   the debounce window (with --debounce), 1s to 1d, e.g. 30s
  --max-wait DURATION with --debounce: run at the latest this long after the burst's first enqueue`,
    options: {
      payload: { type: 'string' },
      at: { type: 'string' },
      in: { type: 'string' },
      key: { type: 'string' },
      priority: { type: 'string' },
      'max-attempts': { type: 'string' },
      debounce: { type: 'string' },
      window: { type: 'string' },
      'max-wait': { type: 'string' },
    },
    positionals: 1,
    needsDatabase: true,
    async run(ctx) {
      const { job, created } = await ctx.tracker
        .enqueueUntyped([enqueueInput(ctx.args, ctx.tracker)])
        .then((r) => r[0]!);
      const debounced = stringOption(ctx.args, 'debounce') !== undefined;
      print(
        ctx,
        created
          ? `enqueued ${job.jobType} ${job.id} (due ${job.scheduledAt.toISOString()})`
          : debounced
            ? `joined the pending ${job.jobType} ${job.id} with this debounce key: new payload, due ${job.scheduledAt.toISOString()}`
            : `already enqueued with this key: ${job.jobType} ${job.id} (${job.status}); nothing written`,
        { created, job },
      );
      if (createdJobDueNow([{ job, created }], ctx.tracker.clock.now() ?? new Date()))
        await wakeFetchReady(ctx.opened, ctx.io.stderr);
      return 0;
    },
  },
  list: {
    options: { status: { type: 'string' }, type: { type: 'string' }, limit: { type: 'string' } },
    positionals: 0,
    needsDatabase: true,
    async run(ctx) {
      const status = stringOption(ctx.args, 'status');
      if (status !== undefined && !JOB_STATUSES.includes(status as JobStatus)) {
        throw new UsageError(`--status must be one of ${JOB_STATUSES.join(', ')} (got "${status}")`);
      }
      const jobs = await ctx.tracker.listJobs({
        status: status as JobStatus | undefined,
        jobType: stringOption(ctx.args, 'type'),
        limit: integerOption(ctx.args, 'limit', 1, 10_000) ?? 50,
      });
      print(ctx, formatJobList(jobs), jobs);
      return 0;
    },
  },
  show: {
    options: {},
    positionals: 1,
    needsDatabase: true,
    async run(ctx) {
      const id = requirePositional(ctx.args, 0, 'id');
      const job = await ctx.tracker.requireJob(id);
      const executions = await ctx.tracker.getExecutions(id);
      const payloadChanges = await ctx.tracker.getPayloadChanges(id);
      print(ctx, formatJob(job, executions) + formatPayloadChanges(payloadChanges), {
        job,
        executions,
        payloadChanges,
      });
      return 0;
    },
  },
  stats: {
    options: {},
    positionals: 0,
    needsDatabase: true,
    async run(ctx) {
      const stats = await ctx.tracker.stats();
      print(ctx, formatStats(stats), stats);
      return 0;
    },
  },
  retry: retryCommand,
  purge: {
    help: `${CLI_NAME} purge --status S --older-than D [--type T] [--yes]: delete finished jobs and their
attempt history. Without --yes (or with --dry-run) it only shows what it would delete.
  --status S          failed, cancelled or completed (required: failed jobs are an operator's evidence)
  --older-than D      finished longer ago than D: 30s, 5m, 2h, 7d (required)
  --type T            only this job type
  --yes               delete
  --dry-run           show what would be deleted, delete nothing (the default)`,
    options: {
      'older-than': { type: 'string' },
      type: { type: 'string' },
      status: { type: 'string' },
      yes: { type: 'boolean' },
      'dry-run': { type: 'boolean' },
    },
    positionals: 0,
    needsDatabase: true,
    async run(ctx) {
      const status = stringOption(ctx.args, 'status');
      if (status === undefined) {
        throw new UsageError('--status is required (failed, cancelled or completed)');
      }
      if (status !== 'failed' && status !== 'cancelled' && status !== 'completed') {
        throw new UsageError(`--status must be failed, cancelled or completed (got "${status}")`);
      }
      const olderThan = stringOption(ctx.args, 'older-than');
      if (olderThan === undefined) throw new UsageError('--older-than is required (e.g. 7d)');
      const confirmed = ctx.args.values.yes === true;
      if (confirmed && ctx.args.values['dry-run']) throw new UsageError('use either --yes or --dry-run');
      const now = ctx.tracker.clock.now() ?? new Date();
      const before = new Date(now.getTime() - parseDuration(olderThan, 'older-than'));
      const filter = { before, statuses: [status] as const, jobType: stringOption(ctx.args, 'type') };
      if (!confirmed) {
        const wouldDelete = await ctx.tracker.countFinished(filter);
        const total = wouldDelete.reduce((n, r) => n + r.count, 0);
        const lines = wouldDelete.map((r) => `  ${r.count} ${r.jobType}`);
        print(
          ctx,
          [
            `dry run: would delete ${total} ${status} job(s) finished before ${before.toISOString()}`,
            ...lines,
            total > 0 ? 'nothing deleted; add --yes to delete them' : 'nothing deleted',
          ].join('\n'),
          { dryRun: true, wouldDelete: total, byType: wouldDelete, status, before },
        );
        return 0;
      }
      const deleted = await ctx.tracker.pruneFinished(filter);
      print(ctx, `deleted ${deleted} ${status} job(s) finished before ${before.toISOString()}`, {
        deleted,
        status,
        before,
      });
      return 0;
    },
  },
  cancel: {
    help: `${CLI_NAME} cancel <id> [--reason TEXT]: stop a pending, retrying or running job.
  --reason TEXT       why, kept in the job's history (at most ${MAX_REASON_LENGTH} characters)`,
    options: { reason: { type: 'string' } },
    positionals: 1,
    needsDatabase: true,
    async run(ctx) {
      const job = await ctx.tracker.cancel(
        requirePositional(ctx.args, 0, 'id'),
        textOption(ctx.args, 'reason', MAX_REASON_LENGTH),
      );
      print(ctx, `${job.id} cancelled`, job);
      return 0;
    },
  },
  console: {
    options: { port: { type: 'string' }, host: { type: 'string' }, token: { type: 'string' } },
    positionals: 0,
    needsDatabase: true,
    run: (ctx) =>
      runConsoleCommand({
        tracker: ctx.tracker,
        io: ctx.io,
        description: ctx.opened!.description,
        waker: ctx.opened!.waker,
        port: integerOption(ctx.args, 'port', 0, 65_535) ?? 4100,
        host: stringOption(ctx.args, 'host'),
        token: stringOption(ctx.args, 'token') ?? process.env.JOBS_CONSOLE_TOKEN,
      }),
  },
  repay: repayCommand,
  work: workerCommand({ demo: false }),
  dev: workerCommand({ demo: true }),
  'accept-price': acceptPriceCommand,
  pause: pauseCommand,
  resume: resumeCommand,
};

/** `work` and `dev`: a worker until Ctrl-C; `dev` also runs the demo. */
function workerCommand(options: { demo: boolean }): Command {
  return {
    options: { concurrency: { type: 'string' } },
    positionals: 0,
    needsDatabase: true,
    run: (ctx) =>
      runWorkerCommand({
        opened: ctx.opened!,
        io: ctx.io,
        json: ctx.json,
        concurrency: integerOption(ctx.args, 'concurrency', 1, 1000),
        demo: options.demo,
        console: options.demo ? { port: 4100 } : undefined,
      }),
  };
}

/** Runs the CLI; returns the exit code (0 ok, 2 bad input, 1 failure). */
export async function runCli(
  argv: string[],
  io: CliIo = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.stdout.write(USAGE);
    return name === undefined ? 2 : 0;
  }
  const command = commands[name];
  if (!command) {
    io.stderr.write(`${CLI_NAME}: unknown command "${name}" (run "${CLI_NAME} --help")\n`);
    return 2;
  }
  let opened: OpenedDatabase | null = null;
  try {
    const args = parseCommandLine(rest, command.options, command.positionals);
    if (args.values.help) {
      io.stdout.write(commandHelp(name, command));
      return 0;
    }
    const registry = createJobTypeRegistry();
    if (name === 'work' || name === 'dev') {
      // The runtime's LANA_* settings, read before anything starts: a bad one is the caller's to fix.
      try {
        lendingSettingsFromEnv();
      } catch (err) {
        throw new UsageError(errorMessage(err));
      }
    }
    const named =
      command.usesNamedDatabase &&
      (args.values['data-api'] || stringOption(args, 'database-url') || process.env.DATABASE_URL);
    if (command.needsDatabase || named) {
      const url = stringOption(args, 'database-url');
      if (url !== undefined && url.trim() === '') {
        throw new UsageError(
          '--database-url is empty: give a PostgreSQL URL (postgres://user:password@host:5432/database), or leave the option out to use DATABASE_URL or the embedded server',
        );
      }
      if (args.values['data-api'] && url)
        throw new UsageError('use either --data-api or --database-url, not both');
      if (args.values['data-api'] && name === 'dev')
        throw new UsageError('dev runs locally; use `work` or other commands with --data-api');
      const logger = createConsoleLogger({ stream: io.stderr });
      opened = args.values['data-api']
        ? openDataApiFromEnv(process.env)
        : await openLocalDatabase({
            databaseUrl: url,
            logger: name === 'work' || name === 'dev' ? logger : undefined,
          });
      if (command.needsDatabase && name !== 'migrate' && name !== 'work' && name !== 'dev')
        await assertMigrated(opened);
    }
    const tracker: LendingTracker | null = opened ? new JobTracker({ db: opened.db, registry }) : null;
    return await command.run({
      args,
      io,
      json: Boolean(args.values.json),
      registry,
      opened,
      get tracker(): LendingTracker {
        if (!tracker) throw new Error(`"${name}" does not use the database`);
        return tracker;
      },
    });
  } catch (err) {
    const usage =
      err instanceof UsageError || err instanceof JobInputError || err instanceof DatabaseSettingError;
    const exitCode = usage ? 2 : 1;
    if (rest.includes('--json')) {
      // Machine-readable callers get machine-readable errors: one JSON object on stderr.
      const code = err instanceof JobInputError ? err.code : usage ? 'usage' : 'error';
      io.stderr.write(
        `${JSON.stringify({ error: { command: name, code, message: errorMessage(err), exitCode } })}\n`,
      );
    } else io.stderr.write(`${CLI_NAME} ${name}: ${errorMessage(err)}\n`);
    return exitCode;
  } finally {
    await opened?.close().catch(() => {});
  }
}

/** `<command> --help`: the command's own help, else its line(s) of the overview; then the global options. */
function commandHelp(name: string, command: Command): string {
  if (command.help) return `${command.help}\n\n${GLOBAL_HELP}`;
  const lines = USAGE.split('\n');
  const start = lines.findIndex((l) => l.startsWith(`  ${name} `) || l === `  ${name}`);
  const own: string[] = [];
  if (start >= 0) {
    own.push(lines[start]!);
    for (const l of lines.slice(start + 1)) {
      if (!l.startsWith('        ')) break;
      own.push(l);
    }
  }
  return `Usage: ${CLI_NAME} ${name}${own.length > 0 ? `\n${own.join('\n')}` : ''}\n\n${GLOBAL_HELP}`;
}

/** A clear message instead of "relation jobs does not exist". */
async function assertMigrated(opened: OpenedDatabase): Promise<void> {
  const res = await opened.db.query<{ present: boolean }>(
    "SELECT to_regclass('jobs') IS NOT NULL AS present",
  );
  if (!res.rows[0]?.present) {
    throw new UsageError(
      `the job tables do not exist in ${opened.description}; run "${CLI_NAME} migrate" first`,
    );
  }
}
