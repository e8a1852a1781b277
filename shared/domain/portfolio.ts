import { randomUUID } from 'node:crypto';
import { type Database, json, type Queryable, uuid } from '../db/port.js';
import type { PortfolioService } from '../job-types/services.js';
import { PermanentJobError } from '../jobs/errors.js';
import type { JobTracker } from '../jobs/tracker.js';
import { ENQUEUE_PAGE_SIZE, FIRST_PAGE_AFTER_ID, LOCK_FACILITY_BULK_UPDATES_SQL } from './bulk.js';
import { agree, largestAgreeingSet, median, percent, share, withinJump } from './price-agreement.js';
import { type PriceQuote, type PriceSource, PriceSourceError } from './price-source.js';
import { NOTICES_PAGE_SQL, VALUE_BATCH_SQL } from './valuation-sql.js';

/** How far (a share of the reference price) a quote may be from it before it needs confirming. */
export const DEFAULT_MAX_PRICE_JUMP = '0.2';
/** How far apart (a share of the lowest) quotes may be and still agree. */
export const DEFAULT_PRICE_AGREEMENT = '0.02';
/** Consecutive unanimous runs a move beyond the jump guard needs before it is accepted. */
export const DEFAULT_PRICE_CONFIRM_RUNS = 3;
/** How far above a level a facility's cover must be to move back up a state (so a wobble does not flap). */
export const DEFAULT_UPGRADE_BUFFER = '0.05';
/** How old a quote may be: a price older than a few minutes can miss a move that calls margins. */
export const DEFAULT_MAX_QUOTE_AGE_SECONDS = 300;
/** How long an accepted price may back a disbursal: three scheduled runs, so one failed run refuses none. */
export const DEFAULT_MAX_VALUATION_AGE_SECONDS = 900;
/** How far ahead of this machine's clock a quote may be dated: clocks of two servers differ a little. */
const QUOTE_CLOCK_SKEW_SECONDS = 60;
/**
 * The reference each quote is judged against is the median of this many last accepted prices (since the
 * last price an operator accepted by hand): one wrongly accepted price, or two, cannot move it.
 */
export const REFERENCE_WINDOW = 5;
/** Facilities per valuation batch: one transaction each, well under the Data API's 45 s statement limit. */
export const VALUATION_BATCH_SIZE = 20_000;

export type CollateralizationState =
  | 'fully-collateralized'
  | 'under-margin-call'
  | 'under-liquidation'
  | 'no-collateral'
  | 'no-exposure';

/**
 * How an accepted price was reached: the sources' median within the jump guard, a move beyond it that a
 * majority of the sources confirmed over several runs, or an operator's acceptance by hand.
 */
export type PriceBasis = 'sources' | 'sustained-move' | 'manual';

export interface ValuationResult {
  valuationId: string;
  btcUsdCents: bigint;
  basis: PriceBasis;
  /** Price sources whose answers made the price (0 for a price accepted by hand). */
  quotes: number;
  facilitiesValued: number;
  /** Rows written: facilities whose value, cover or state changed. */
  facilitiesChanged: number;
  transitions: number;
  /** Notices enqueued (margin call, liquidation level, recovered): one per notice-worthy transition. */
  notices: number;
  /** Facilities under margin call or liquidation after the run. */
  belowMarginCall: number;
  batches: number;
}

/** The portfolio service with its result typed (an extension, so callers passing a signal see it too). */
export interface LendingPortfolioService extends PortfolioService {
  revalue(signal?: AbortSignal): Promise<ValuationResult>;
  /** Values the portfolio at a price an operator accepted by hand; null when that was already done. */
  applyManualPrice(manualPriceId: string, signal?: AbortSignal): Promise<ValuationResult | null>;
}

interface Answer {
  source: string;
  cents: bigint;
  pricedAt: Date;
}

interface Accepted {
  price: bigint;
  basis: PriceBasis;
  quotes: number;
  /** When the price was priced: its oldest quote. */
  pricedAt: Date;
}

const NEXT_BATCH_END_SQL = `
SELECT id AS upto FROM (
  SELECT id FROM credit_facilities WHERE id > CAST(:after AS uuid) ORDER BY id LIMIT :size
) batch ORDER BY id DESC LIMIT 1`;

/**
 * The reference each quote is judged against: the median of the last REFERENCE_WINDOW accepted prices,
 * counting only those since the newest price an operator accepted by hand (which resets it).
 */
const REFERENCE_PRICES_SQL = `
SELECT btc_usd_cents AS cents FROM collateral_valuations
WHERE valued_at >= COALESCE((SELECT max(valued_at) FROM collateral_valuations WHERE basis = 'manual'), '-infinity')
ORDER BY valued_at DESC, id DESC LIMIT ${REFERENCE_WINDOW}`;

/**
 * Portfolio valuation (the `sync` job). The price comes from the configured sources, each judged on its
 * own (docs/lending.md, "The price rule"):
 * - a quote older than `maxQuoteAgeSeconds`, or dated ahead of this machine's clock by more than a
 *   minute, counts as no answer; two answers are needed once two or more sources are configured;
 * - each quote is judged against the REFERENCE, the median of the last accepted prices, which no single
 *   wrong run can move: a quote further than `maxPriceJump` from it does not count;
 * - with fewer than three quotes left, they must agree with each other within `priceAgreement`;
 * - the price is the median of the quotes left;
 * - a move beyond the jump guard is accepted once all the sources have agreed on it in
 *   `priceConfirmRuns` consecutive runs.
 * A refused run records what it saw in `price_observations`, writes nothing else and fails its attempt
 * (the job retries). An accepted price values the facilities batch by batch of ids, each batch one
 * transaction that also enqueues its transitions' notices (one per transition), so a crash between
 * batches is finished by the re-run without a duplicate. The run ends by recording the portfolio in
 * `collateral_valuations`: the newest row is the last accepted price, valid for disbursals until
 * `maxValuationAgeSeconds` after it was priced.
 */
export function createPortfolioService(deps: {
  db: Database;
  jobs: Pick<JobTracker, 'enqueueUntyped'>;
  priceSource: PriceSource | readonly PriceSource[];
  maxPriceJump?: string;
  /** How far apart quotes may be and still agree (default 0.02). */
  priceAgreement?: string;
  /** Consecutive agreeing runs a move beyond the jump guard needs (default 3). */
  priceConfirmRuns?: number;
  /** How old a quote may be, in seconds (default 300). */
  maxQuoteAgeSeconds?: number;
  /** How long an accepted price backs a disbursal, in seconds (default 900). */
  maxValuationAgeSeconds?: number;
  upgradeBuffer?: string;
  /** The clock quotes are aged against. */
  now?: () => Date;
  batchSize?: number;
  afterBatch?: (batch: number) => Promise<void>;
}): LendingPortfolioService {
  const sources = Array.isArray(deps.priceSource)
    ? (deps.priceSource as readonly PriceSource[])
    : [deps.priceSource as PriceSource];
  if (sources.length === 0) throw new Error('portfolio valuation needs at least one price source');
  const names = sources.map((s, i) => s.name ?? `source ${i + 1}`);
  const maxJump = share(deps.maxPriceJump ?? DEFAULT_MAX_PRICE_JUMP, 'max price jump');
  const tolerance = share(deps.priceAgreement ?? DEFAULT_PRICE_AGREEMENT, 'price agreement');
  const confirmRuns = deps.priceConfirmRuns ?? DEFAULT_PRICE_CONFIRM_RUNS;
  if (!Number.isInteger(confirmRuns) || confirmRuns < 2 || confirmRuns > 100) {
    throw new Error(`price confirm runs must be a whole number from 2 to 100, got ${String(confirmRuns)}`);
  }
  const buffer = deps.upgradeBuffer ?? DEFAULT_UPGRADE_BUFFER;
  share(buffer, 'upgrade buffer');
  const batchSize = deps.batchSize ?? VALUATION_BATCH_SIZE;
  const maxAgeSeconds = deps.maxQuoteAgeSeconds ?? DEFAULT_MAX_QUOTE_AGE_SECONDS;
  if (!Number.isInteger(maxAgeSeconds) || maxAgeSeconds < 1) {
    throw new Error(
      `max quote age must be a whole number of seconds, at least 1, got ${String(maxAgeSeconds)}`,
    );
  }
  const validSeconds = deps.maxValuationAgeSeconds ?? DEFAULT_MAX_VALUATION_AGE_SECONDS;
  if (!Number.isInteger(validSeconds) || validSeconds < 1) {
    throw new Error(
      `max valuation age must be a whole number of seconds, at least 1, got ${String(validSeconds)}`,
    );
  }
  const now = deps.now ?? (() => new Date());
  /** Sources needed to price a run: two once two or more are configured. */
  const needed = Math.min(2, sources.length);
  /**
   * Agreeing sources that confirm a move beyond the jump guard: all of them (issue 26: "all sources
   * agreeing over several runs"). A source that is down blocks a confirmation: an operator accepts a
   * price by hand meanwhile (`lana-jobs accept-price`). (`price_observations.majority_agrees` records it.)
   */
  const majority = sources.length;

  /** The quote when it is fresh; a stale or future-dated quote is refused like a failed request. */
  async function freshQuote(source: PriceSource, signal?: AbortSignal): Promise<PriceQuote> {
    const quote: PriceQuote = await source.btcUsdQuote(signal);
    const ageSeconds = (now().getTime() - quote.pricedAt.getTime()) / 1000;
    if (!(ageSeconds <= maxAgeSeconds)) {
      throw new PriceSourceError(
        `quote priced at ${quote.pricedAt.toISOString()} is ${Math.round(ageSeconds)} s old ` +
          `(limit ${maxAgeSeconds} s): refused as stale`,
      );
    }
    if (ageSeconds < -QUOTE_CLOCK_SKEW_SECONDS) {
      throw new PriceSourceError(
        `quote priced at ${quote.pricedAt.toISOString()} is dated ${Math.round(-ageSeconds)} s in the future: refused`,
      );
    }
    return quote;
  }

  async function referencePrice(): Promise<bigint | null> {
    const rows = (await deps.db.query<{ cents: bigint }>(REFERENCE_PRICES_SQL)).rows;
    return rows.length === 0 ? null : median(rows.map((r) => r.cents));
  }

  /** How many consecutive runs, this one included, a majority of the sources agreed on `price`. */
  async function consecutiveAgreeingRuns(price: bigint): Promise<number> {
    const previous = (
      await deps.db.query<{ median_cents: bigint | null; majority_agrees: boolean }>(
        `SELECT median_cents, majority_agrees FROM price_observations
         ORDER BY observed_at DESC, id DESC LIMIT :n`,
        { n: confirmRuns - 1 },
      )
    ).rows;
    const prices = [price];
    for (const o of previous) {
      if (!o.majority_agrees || o.median_cents === null || !agree([...prices, o.median_cents], tolerance))
        break;
      prices.push(o.median_cents);
    }
    return prices.length;
  }

  const cents = (c: bigint): string => `${c} cents`;
  const list = (answers: readonly Answer[]): string =>
    answers.map((a) => `${a.source} ${cents(a.cents)}`).join(', ');

  /** Judges the answers (see `createPortfolioService`): the accepted price, or the reason for refusing. */
  async function judge(
    answers: readonly Answer[],
    failures: readonly string[],
    agreeing: readonly bigint[],
  ): Promise<{ accepted: Accepted } | { refused: string }> {
    if (answers.length < needed) {
      return {
        refused: `only ${answers.length} of ${sources.length} price sources answered (${needed} needed): ${failures.join('; ')}`,
      };
    }
    const reference = await referencePrice();
    const inRange = answers.filter((a) => reference === null || withinJump(a.cents, reference, maxJump));
    const oldest = (used: readonly Answer[]) => new Date(Math.min(...used.map((a) => a.pricedAt.getTime())));
    if (inRange.length >= needed) {
      if (
        inRange.length < 3 &&
        !agree(
          inRange.map((a) => a.cents),
          tolerance,
        )
      ) {
        return {
          refused: `the price sources disagree by more than ${percent(tolerance)} (${list(inRange)}): refused`,
        };
      }
      return {
        accepted: {
          price: median(inRange.map((a) => a.cents)),
          basis: 'sources',
          quotes: inRange.length,
          pricedAt: oldest(inRange),
        },
      };
    }
    const outside = answers.filter((a) => !inRange.includes(a));
    const moved =
      `${list(outside)} ${outside.length === 1 ? 'is' : 'are'} more than ${percent(maxJump)} from the ` +
      `reference ${cents(reference!)} (the median of the last accepted prices)`;
    if (agreeing.length < majority) {
      return {
        refused: `${moved}, and not all ${sources.length} sources agree on a price: refused`,
      };
    }
    const price = median(agreeing);
    const runs = await consecutiveAgreeingRuns(price);
    if (runs < confirmRuns) {
      return {
        refused:
          `${moved}: refused until all the sources agree on it in ${confirmRuns} consecutive runs ` +
          `(this is run ${runs})`,
      };
    }
    const used = answers.filter((a) => agreeing.includes(a.cents));
    return { accepted: { price, basis: 'sustained-move', quotes: used.length, pricedAt: oldest(used) } };
  }

  async function acceptedPrice(signal?: AbortSignal): Promise<Accepted> {
    const settled = await Promise.allSettled(sources.map((s) => freshQuote(s, signal)));
    signal?.throwIfAborted();
    const answers: Answer[] = [];
    const failures: string[] = [];
    const seen = settled.map((r, i) => {
      if (r.status === 'fulfilled') {
        answers.push({ source: names[i]!, cents: r.value.cents, pricedAt: r.value.pricedAt });
        return { source: names[i], cents: String(r.value.cents), pricedAt: r.value.pricedAt.toISOString() };
      }
      const error = String((r.reason as Error).message);
      failures.push(`${names[i]}: ${error}`);
      return { source: names[i], error };
    });
    const largest = largestAgreeingSet(
      answers.map((a) => a.cents),
      tolerance,
    );
    const agreeing = largest.length >= majority ? largest : [];
    const decision = await judge(answers, failures, agreeing);
    await deps.db.query(
      `INSERT INTO price_observations (id, sources_configured, quotes, median_cents, majority_agrees, outcome, reason)
       VALUES (CAST(:id AS uuid), :configured, CAST(:quotes AS jsonb), :median, :agrees, :outcome, :reason)
       ON CONFLICT (id) DO NOTHING`,
      {
        id: uuid(randomUUID()),
        configured: sources.length,
        quotes: json(seen),
        median:
          agreeing.length > 0
            ? median(agreeing)
            : answers.length > 0
              ? median(answers.map((a) => a.cents))
              : null,
        agrees: agreeing.length > 0,
        outcome: 'accepted' in decision ? 'accepted' : 'refused',
        reason: 'refused' in decision ? decision.refused : null,
      },
    );
    if ('refused' in decision) throw new PriceSourceError(decision.refused);
    return decision.accepted;
  }

  async function enqueueNotices(tx: Queryable, run: string, after: string, upto: string): Promise<number> {
    let enqueued = 0;
    let from = after;
    for (;;) {
      const page = await tx.query<{ id: string; facility_id: string; kind: string; valuation_date: string }>(
        NOTICES_PAGE_SQL,
        { run: uuid(run), after: uuid(from), upto: uuid(upto) },
      );
      if (page.rows.length === 0) break;
      await deps.jobs.enqueueUntyped(
        page.rows.map((n) => ({
          type: 'notification',
          payload: {
            kind: n.kind,
            facilityId: n.facility_id,
            valuationDate: n.valuation_date,
            transitionId: n.id,
          },
          idempotencyKey: `transition:${n.id}`,
        })),
        { db: tx },
      );
      enqueued += page.rows.length;
      from = page.rows[page.rows.length - 1]!.facility_id;
      if (page.rows.length < ENQUEUE_PAGE_SIZE) break;
    }
    return enqueued;
  }

  /** Values every active facility at `accepted.price` and records the run as the newest accepted price. */
  async function valueAt(
    accepted: Accepted,
    manualPriceId: string | null,
    signal?: AbortSignal,
  ): Promise<ValuationResult> {
    const { price } = accepted;
    const run = randomUUID();
    const result: ValuationResult = {
      valuationId: run,
      btcUsdCents: price,
      basis: accepted.basis,
      quotes: accepted.quotes,
      facilitiesValued: 0,
      facilitiesChanged: 0,
      transitions: 0,
      notices: 0,
      belowMarginCall: 0,
      batches: 0,
    };
    let after = FIRST_PAGE_AFTER_ID;
    for (;;) {
      signal?.throwIfAborted();
      const end = (
        await deps.db.query<{ upto: string | null }>(NEXT_BATCH_END_SQL, {
          after: uuid(after),
          size: batchSize,
        })
      ).rows[0]?.upto;
      if (!end) break;
      const batch = await deps.db.transaction(async (tx) => {
        await tx.query(LOCK_FACILITY_BULK_UPDATES_SQL);
        const counts = (
          await tx.query<{ valued: number; changed: number; transitions: number }>(VALUE_BATCH_SQL, {
            price,
            buffer,
            run: uuid(run),
            after: uuid(after),
            upto: uuid(end),
          })
        ).rows[0]!;
        const notices = counts.transitions > 0 ? await enqueueNotices(tx, run, after, end) : 0;
        return { ...counts, notices };
      });
      result.facilitiesValued += batch.valued;
      result.facilitiesChanged += batch.changed;
      result.transitions += batch.transitions;
      result.notices += batch.notices;
      result.batches += 1;
      after = end;
      await deps.afterBatch?.(result.batches);
    }
    const record = await deps.db.query<{ below: number }>(
      `INSERT INTO collateral_valuations (id, btc_usd_cents, facilities_valued, below_threshold, facilities_changed,
         total_collateral_cents, total_outstanding_cents, weighted_cover, fully_collateralized, under_margin_call,
         under_liquidation, no_collateral, no_exposure, basis, priced_at, valid_until, manual_price_id)
       SELECT CAST(:run AS uuid), :price, :valued,
              count(*) FILTER (WHERE collateralization_state IN ('under-margin-call', 'under-liquidation')), :changed,
              COALESCE(sum(collateral_value_cents), 0), COALESCE(sum(drawn_principal_cents + accrued_interest_cents), 0),
              round(sum(collateral_value_cents)::numeric / NULLIF(sum(drawn_principal_cents + accrued_interest_cents), 0), 4),
              count(*) FILTER (WHERE collateralization_state = 'fully-collateralized'),
              count(*) FILTER (WHERE collateralization_state = 'under-margin-call'),
              count(*) FILTER (WHERE collateralization_state = 'under-liquidation'),
              count(*) FILTER (WHERE collateralization_state = 'no-collateral'),
              count(*) FILTER (WHERE collateralization_state = 'no-exposure'),
              :basis, CAST(:priced_at AS timestamptz),
              LEAST(CAST(:priced_at AS timestamptz), now()) + make_interval(secs => :valid_seconds),
              CAST(:manual AS uuid)
       FROM credit_facilities WHERE status = 'active'
       RETURNING below_threshold AS below`,
      {
        run: uuid(run),
        price,
        valued: result.facilitiesValued,
        changed: result.facilitiesChanged,
        basis: accepted.basis,
        priced_at: accepted.pricedAt,
        valid_seconds: validSeconds,
        manual: manualPriceId === null ? null : uuid(manualPriceId),
      },
    );
    result.belowMarginCall = record.rows[0]!.below;
    return result;
  }

  return {
    async revalue(signal) {
      return valueAt(await acceptedPrice(signal), null, signal);
    },

    async applyManualPrice(manualPriceId, signal) {
      const manual = (
        await deps.db.query<{ cents: bigint; accepted_at: Date; applied: boolean; stale: boolean }>(
          `SELECT m.btc_usd_cents AS cents, m.accepted_at,
                  EXISTS (SELECT 1 FROM collateral_valuations v WHERE v.manual_price_id = m.id) AS applied,
                  m.accepted_at + make_interval(secs => :valid_seconds) < now() AS stale
           FROM manual_prices m WHERE m.id = CAST(:id AS uuid)`,
          { id: uuid(manualPriceId), valid_seconds: validSeconds },
        )
      ).rows[0];
      if (!manual) throw new PermanentJobError(`no price accepted by hand with id ${manualPriceId}`);
      if (manual.applied) return null;
      if (manual.stale) {
        throw new PermanentJobError(
          `the price accepted by hand at ${manual.accepted_at.toISOString()} is older than the valuation's ` +
            `max age (${validSeconds} s) and was not applied: accept a current price again`,
        );
      }
      return valueAt(
        { price: manual.cents, basis: 'manual', quotes: 0, pricedAt: manual.accepted_at },
        manualPriceId,
        signal,
      );
    },
  };
}

export { acceptPriceByHand } from './manual-price.js';
