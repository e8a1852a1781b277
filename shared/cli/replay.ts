import { userInfo } from 'node:os';
import type { LendingTracker } from '../job-types/index.js';
import { parsePayloadText } from '../jobs/job-input.js';
import { MAX_CHANGED_BY_LENGTH, type PayloadChange } from '../jobs/operator.js';
import type { OpenedDatabase } from '../runtime/database.js';
import {
  type OptionSpec,
  type Parsed,
  requirePositional,
  stringOption,
  textOption,
  UsageError,
} from './args.js';
import { wakeFetchReady } from './data-api.js';
import { iso, table, toJson } from './format.js';

interface RetryCommandContext {
  args: Parsed;
  io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream };
  json: boolean;
  opened: OpenedDatabase | null;
  tracker: LendingTracker;
}

/**
 * `retry <id> [--payload JSON [--by NAME]]`: a failed or cancelled job back in the queue; with `--payload`,
 * replayed with that payload (validated by the type's schema), the one it had kept in its history with who
 * changed it. Bad input exits 2 with one line and writes nothing.
 */
export const retryCommand = {
  help: `lana-jobs retry <id> [--payload JSON] [--by NAME]: put a failed or cancelled job back in the queue,
due now, with a fresh attempt budget.
  --payload JSON      replay it with this payload instead (a JSON object, checked against the type's
                      schema); the payload it had stays in its history (\`lana-jobs show <id>\`)
  --by NAME           who changes the payload (default: the system user; at most ${MAX_CHANGED_BY_LENGTH} characters)`,
  options: { payload: { type: 'string' }, by: { type: 'string' } } as OptionSpec,
  positionals: 1,
  needsDatabase: true,
  async run(ctx: RetryCommandContext): Promise<number> {
    const id = requirePositional(ctx.args, 0, 'id');
    // The same reading of payload text as every door's (`job-input.ts`).
    const payloadText = stringOption(ctx.args, 'payload');
    const payload = payloadText === undefined ? undefined : parsePayloadText(payloadText);
    const byOption = textOption(ctx.args, 'by', MAX_CHANGED_BY_LENGTH);
    if (payload === undefined && byOption !== undefined)
      throw new UsageError('--by names who changes the payload: give it with --payload');
    const job =
      payload === undefined
        ? await ctx.tracker.retry(id)
        : await ctx.tracker.retryWithPayload(id, payload, byOption ?? systemUser());
    ctx.io.stdout.write(
      `${
        ctx.json
          ? toJson(job)
          : `${job.id} is pending again${payload === undefined ? '' : ' with the new payload'} (attempt budget ${job.maxAttempts - job.attempts})`
      }\n`,
    );
    await wakeFetchReady(ctx.opened, ctx.io.stderr);
    return 0;
  },
};

function systemUser(): string {
  try {
    return userInfo().username || 'lana-jobs cli';
  } catch {
    return 'lana-jobs cli';
  }
}

/** For `show`: the replays that changed the job's payload, oldest first (empty when none). */
export function formatPayloadChanges(changes: readonly PayloadChange[]): string {
  if (changes.length === 0) return '';
  return `\n\npayload changed by replays:\n${table(
    ['CHANGED AT', 'BY', 'PAYLOAD BEFORE', 'PAYLOAD AFTER'],
    changes.map((c) => [
      iso(c.changedAt),
      c.changedBy,
      JSON.stringify(c.previousPayload),
      JSON.stringify(c.payload),
    ]),
  )}`;
}
