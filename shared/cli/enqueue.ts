import type { LendingTracker } from '../job-types/index.js';
import { parsePayloadText } from '../jobs/job-input.js';
import type { UntypedNewJob } from '../jobs/tracker.js';
import { type Parsed, parseDuration, requirePositional, stringOption, UsageError } from './args.js';

/**
 * The job as typed: text goes to the tracker as given, which reads it by the same rules (and with the
 * same messages) as the console's form and application code (`shared/jobs/job-input.ts`).
 */
export function enqueueInput(args: Parsed, tracker: LendingTracker): UntypedNewJob {
  const type = requirePositional(args, 0, 'type');
  tracker.registry.require(type);
  const at = stringOption(args, 'at');
  const inText = stringOption(args, 'in');
  if (at !== undefined && inText !== undefined) throw new UsageError('use either --at or --in, not both');
  const now = tracker.clock.now() ?? new Date();
  const payload = stringOption(args, 'payload');
  const debounceKey = stringOption(args, 'debounce');
  const window = stringOption(args, 'window');
  const maxWait = stringOption(args, 'max-wait');
  if (debounceKey === undefined && (window !== undefined || maxWait !== undefined))
    throw new UsageError('--window and --max-wait belong to --debounce KEY');
  if (debounceKey !== undefined && window === undefined)
    throw new UsageError('--debounce needs --window (e.g. --window 30s)');
  return {
    type,
    payload: payload === undefined ? {} : parsePayloadText(payload),
    runAt: inText !== undefined ? new Date(now.getTime() + parseDuration(inText, 'in')) : at,
    idempotencyKey: stringOption(args, 'key'),
    priority: stringOption(args, 'priority'),
    maxAttempts: stringOption(args, 'max-attempts'),
    // Whole seconds as the tracker reads them; a window of 1500ms is refused there, with its rule.
    debounce:
      debounceKey === undefined
        ? undefined
        : {
            key: debounceKey,
            windowSeconds: parseDuration(window!, 'window') / 1000,
            maxWaitSeconds: maxWait === undefined ? undefined : parseDuration(maxWait, 'max-wait') / 1000,
          },
  };
}
