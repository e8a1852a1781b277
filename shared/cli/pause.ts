import { userInfo } from 'node:os';
import type { LendingTracker } from '../job-types/index.js';
import { MAX_PAUSE_REASON_LENGTH, MAX_PAUSED_BY_LENGTH } from '../jobs/pauses.js';
import type { OpenedDatabase } from '../runtime/database.js';
import { type OptionSpec, type Parsed, requirePositional, textOption, UsageError } from './args.js';
import { wakeFetchReady } from './data-api.js';
import { iso, toJson } from './format.js';

interface PauseCommandContext {
  args: Parsed;
  io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream };
  json: boolean;
  opened: OpenedDatabase | null;
  tracker: LendingTracker;
}

/** Who pauses when `--by` is not given: the operating-system user running the command. */
function defaultOperator(): string {
  try {
    return userInfo().username || 'lana-jobs cli';
  } catch {
    return 'lana-jobs cli';
  }
}

/**
 * `pause <type>`: no claim takes the type's due jobs until `resume`; jobs already running finish. Recorded
 * with who, when and why. An unknown type exits 2 with one line and writes nothing.
 */
export const pauseCommand = {
  help: `lana-jobs pause <type> [--reason TEXT] [--by NAME]: stop claiming a job type's due jobs.
From the next claim on (locally and on AWS) none of its due jobs starts; jobs already running finish;
nothing is cancelled, failed or counted. \`lana-jobs resume <type>\` lets them run again.
  --reason TEXT       why (shown by types, stats and the console; at most ${MAX_PAUSE_REASON_LENGTH} characters)
  --by NAME           who pauses (default: the system user; at most ${MAX_PAUSED_BY_LENGTH} characters)`,
  options: { reason: { type: 'string' }, by: { type: 'string' } } as OptionSpec,
  positionals: 1,
  needsDatabase: true,
  async run(ctx: PauseCommandContext): Promise<number> {
    const type = requirePositional(ctx.args, 0, 'type');
    const reason = textOption(ctx.args, 'reason', MAX_PAUSE_REASON_LENGTH);
    const by = textOption(ctx.args, 'by', MAX_PAUSED_BY_LENGTH) ?? defaultOperator();
    if (by.trim() === '') throw new UsageError('--by must name who pauses');
    const { pause, created } = await ctx.tracker.pauseType(type, { by, reason });
    const why = pause.reason ? `: ${pause.reason}` : '';
    ctx.io.stdout.write(
      `${
        ctx.json
          ? toJson({ created, pause })
          : created
            ? `paused ${pause.jobType} (by ${pause.pausedBy}${why}); its due jobs wait until \`lana-jobs resume ${pause.jobType}\``
            : `${pause.jobType} was already paused by ${pause.pausedBy} since ${iso(pause.pausedAt)}${why}; nothing written`
      }\n`,
    );
    return 0;
  },
};

/** `resume <type>`: the type's due jobs are claimed again, at once (workers and fetch-ready are woken). */
export const resumeCommand = {
  help: `lana-jobs resume <type>: claim a paused job type's due jobs again (wakes the workers, or
fetch-ready with --data-api and JOBS_BUS_NAME).`,
  options: {} as OptionSpec,
  positionals: 1,
  needsDatabase: true,
  async run(ctx: PauseCommandContext): Promise<number> {
    const type = requirePositional(ctx.args, 0, 'type');
    const ended = await ctx.tracker.resumeType(type);
    ctx.io.stdout.write(
      `${
        ctx.json
          ? toJson({ resumed: ended !== null, pause: ended })
          : ended
            ? `resumed ${type} (paused by ${ended.pausedBy} since ${iso(ended.pausedAt)})`
            : `${type} was not paused; nothing written`
      }\n`,
    );
    if (ended) {
      // Best effort, as after an enqueue: without it AWS claims the type's jobs at fetch-ready's next minute.
      await wakeFetchReady(ctx.opened, ctx.io.stderr, "the type's jobs run");
    }
    return 0;
  },
};

/**
 * For `types`: the paused types when a database is named (`--database-url`, `--data-api` or
 * DATABASE_URL), so `types` keeps working without one. A database that cannot say (not migrated yet) is
 * reported on stderr and the types are listed without their pause state.
 */
export async function pausedTypesForListing(
  tracker: LendingTracker,
  io: { stderr: NodeJS.WritableStream },
): Promise<Map<string, { pausedBy: string; pausedAt: Date; reason: string | null }> | null> {
  try {
    return new Map((await tracker.pausedTypes()).map((p) => [p.jobType, p]));
  } catch (err) {
    io.stderr.write(`warning: could not read the paused types (${String(err)})\n`);
    return null;
  }
}
