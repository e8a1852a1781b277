import { acceptPriceByHand, LendingInputError } from '../domain/index.js';
import type { LendingTracker } from '../job-types/index.js';
import type { OpenedDatabase } from '../runtime/database.js';
import { type OptionSpec, type Parsed, stringOption, textOption, UsageError } from './args.js';
import { wakeFetchReady } from './data-api.js';
import { toJson } from './format.js';

/** Kept in `manual_prices`: bounded as the table's checks are. */
const MAX_OPERATOR_LENGTH = 200;
const MAX_REASON_LENGTH = 1000;

interface PriceCommandContext {
  args: Parsed;
  io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream };
  json: boolean;
  opened: OpenedDatabase | null;
  tracker: LendingTracker;
}

/**
 * `accept-price`: an operator accepts a BTC/USD price by hand, audited (who, when, why), and a portfolio
 * valuation at that price is enqueued with it. Bad input exits 2 with one line and writes nothing.
 */
export const acceptPriceCommand = {
  help: `lana-jobs accept-price --price USD --by NAME --reason TEXT: accept a BTC/USD price by hand.
Recorded with who, when and why; a portfolio valuation at that price is enqueued in the same
transaction, and the price becomes the reference the sources' quotes are judged against.
  --price USD         US dollars per BTC, at most two decimals, e.g. 97123.45 (required)
  --by NAME           the operator accepting it (required, at most ${MAX_OPERATOR_LENGTH} characters)
  --reason TEXT       why (required, at most ${MAX_REASON_LENGTH} characters)`,
  options: { price: { type: 'string' }, by: { type: 'string' }, reason: { type: 'string' } } as OptionSpec,
  positionals: 0,
  needsDatabase: true,
  async run(ctx: PriceCommandContext): Promise<number> {
    const price = stringOption(ctx.args, 'price');
    if (price === undefined) throw new UsageError('--price is required (US dollars per BTC, e.g. 97123.45)');
    const by = textOption(ctx.args, 'by', MAX_OPERATOR_LENGTH);
    if (by === undefined || by.trim() === '')
      throw new UsageError('--by is required (who accepts the price)');
    const reason = textOption(ctx.args, 'reason', MAX_REASON_LENGTH);
    if (reason === undefined || reason.trim() === '') {
      throw new UsageError('--reason is required (why the price is accepted by hand)');
    }
    let accepted: Awaited<ReturnType<typeof acceptPriceByHand>>;
    try {
      accepted = await acceptPriceByHand(ctx.opened!.db, ctx.tracker, {
        btcUsd: price,
        acceptedBy: by,
        reason,
      });
    } catch (err) {
      if (err instanceof LendingInputError) throw new UsageError(err.message);
      throw err;
    }
    ctx.io.stdout.write(
      `${
        ctx.json
          ? toJson(accepted)
          : `accepted ${price.trim()} USD/BTC by hand (${accepted.manualPriceId}); valuation job ${accepted.jobId} enqueued`
      }\n`,
    );
    // Best effort, as after an enqueue: without it the valuation runs at fetch-ready's next minute.
    await wakeFetchReady(ctx.opened, ctx.io.stderr, 'the valuation runs');
    return 0;
  },
};
