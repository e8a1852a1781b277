import { randomUUID } from 'node:crypto';
import { type Database, uuid } from '../db/port.js';
import type { JobTracker } from '../jobs/tracker.js';
import { LendingInputError } from './errors.js';
import { decimalToCents, formatCents } from './money.js';

/** Most a price accepted by hand may be: 100,000,000.00 USD per BTC (a typo guard, not a forecast). */
const MAX_MANUAL_PRICE_CENTS = 10_000_000_000n;

/**
 * An operator accepts a BTC/USD price by hand (when the sources cannot agree, or to correct a wrong
 * acceptance): recorded with who, when and why in `manual_prices`, and a portfolio valuation at that
 * price enqueued in the same transaction. The price then resets the reference the sources' quotes are
 * judged against. Refused, writing nothing, without a positive price in dollars and cents, an operator
 * name or a reason.
 */
export async function acceptPriceByHand(
  db: Database,
  jobs: Pick<JobTracker, 'enqueueUntyped'>,
  input: { btcUsd: string; acceptedBy: string; reason: string },
): Promise<{ manualPriceId: string; jobId: string; btcUsdCents: bigint }> {
  const text = input.btcUsd.trim();
  if (!/^\d+(\.\d{1,2})?$/.test(text)) {
    throw new LendingInputError(
      'invalid_price',
      `the price must be US dollars per BTC with at most two decimals, such as 97123.45 (got "${input.btcUsd}")`,
    );
  }
  const cents = decimalToCents(text);
  if (cents <= 0n || cents > MAX_MANUAL_PRICE_CENTS) {
    throw new LendingInputError(
      'invalid_price',
      `the price must be above 0 and at most ${formatCents(MAX_MANUAL_PRICE_CENTS)} (got "${input.btcUsd}")`,
    );
  }
  const by = input.acceptedBy.trim();
  if (by.length === 0 || by.length > 200) {
    throw new LendingInputError(
      'invalid_operator',
      'the operator accepting the price is named (1-200 characters)',
    );
  }
  const reason = input.reason.trim();
  if (reason.length === 0 || reason.length > 1000) {
    throw new LendingInputError(
      'reason_required',
      'a price accepted by hand needs a reason (1-1000 characters)',
    );
  }
  const id = randomUUID();
  return db.transaction(async (tx) => {
    await tx.query(
      `INSERT INTO manual_prices (id, btc_usd_cents, accepted_by, reason)
       VALUES (CAST(:id AS uuid), :cents, :by, :reason) ON CONFLICT (id) DO NOTHING`,
      { id: uuid(id), cents, by, reason },
    );
    const [enqueued] = await jobs.enqueueUntyped(
      [
        {
          type: 'sync',
          payload: { target: 'portfolio-valuation', manualPriceId: id },
          idempotencyKey: `manual-price:${id}`,
        },
      ],
      { db: tx },
    );
    return { manualPriceId: id, jobId: enqueued!.job.id, btcUsdCents: cents };
  });
}
