import { randomUUID } from 'node:crypto';
import { type Database, type Queryable, uuid } from '../db/port.js';
import type { PortfolioService } from '../job-types/services.js';
import type { JobTracker } from '../jobs/tracker.js';
import { ENQUEUE_PAGE_SIZE, FIRST_PAGE_AFTER_ID, LOCK_FACILITY_BULK_UPDATES_SQL } from './bulk.js';
import { type PriceQuote, type PriceSource, PriceSourceError } from './price-source.js';

/** How far (a share of the last accepted price) a new price may move before two sources must agree on it. */
export const DEFAULT_MAX_PRICE_JUMP = '0.2';
/** How far above a level a facility's cover must be to move back up a state (so a wobble does not flap). */
export const DEFAULT_UPGRADE_BUFFER = '0.05';
/** How old a quote may be: a price older than a few minutes can miss a move that calls margins. */
export const DEFAULT_MAX_QUOTE_AGE_SECONDS = 300;
/** How far ahead of this machine's clock a quote may be dated: clocks of two servers differ a little. */
const QUOTE_CLOCK_SKEW_SECONDS = 60;
/** Quotes within this share of the median count as agreeing with it. */
const AGREEMENT = 0.01;
/** Facilities per valuation batch: one transaction each, well under the Data API's 45 s statement limit. */
export const VALUATION_BATCH_SIZE = 20_000;

export type CollateralizationState =
  | 'fully-collateralized'
  | 'under-margin-call'
  | 'under-liquidation'
  | 'no-collateral'
  | 'no-exposure';

export interface ValuationResult {
  valuationId: string;
  btcUsdCents: bigint;
  /** Price sources that answered. */
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
}

function median(values: readonly bigint[]): bigint {
  const sorted = [...values].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2n;
}

function share(text: string, what: string): number {
  if (!/^\d+(\.\d+)?$/.test(text) || Number(text) <= 0 || Number(text) >= 1) {
    throw new Error(`${what} must be a decimal share between 0 and 1 such as "0.2", got "${text}"`);
  }
  return Number(text);
}

/**
 * One batch (facility ids in (:after, :upto]): values the collateral at the price (sats × price / 10^8,
 * half up to the cent), the cover on TOTAL outstanding (drawn principal plus accrued interest not yet
 * paid), and the collateralization state against the facility's own levels; moving back UP a state needs
 * the cover to clear that level plus the buffer. Only rows whose value, cover or state changed are written,
 * and each state change is recorded as a transition of this run.
 */
const VALUE_BATCH_SQL = `
WITH priced AS (
  SELECT f.id, f.collateralization_state AS old_state, f.collateral_value_cents AS old_value,
         f.collateral_to_loan_ratio AS old_ratio, f.collateral_sats, f.margin_call_cvl, f.liquidation_cvl,
         div(f.collateral_sats::numeric * :price + 50000000, 100000000)::bigint AS value,
         f.drawn_principal_cents + f.accrued_interest_cents AS outstanding
  FROM credit_facilities f
  WHERE f.status = 'active' AND f.id > CAST(:after AS uuid) AND f.id <= CAST(:upto AS uuid)
), ranked AS (
  SELECT p.*,
         CASE WHEN p.outstanding > 0 THEN round(p.value::numeric / p.outstanding, 4) END AS ratio,
         CASE WHEN p.value < p.liquidation_cvl * p.outstanding THEN 0
              WHEN p.value < p.margin_call_cvl * p.outstanding THEN 1 ELSE 2 END AS raw_rank,
         CASE WHEN p.value < (p.liquidation_cvl + CAST(:buffer AS numeric)) * p.outstanding THEN 0
              WHEN p.value < (p.margin_call_cvl + CAST(:buffer AS numeric)) * p.outstanding THEN 1 ELSE 2 END AS buffered_rank,
         CASE p.old_state WHEN 'under-liquidation' THEN 0 WHEN 'under-margin-call' THEN 1
                          WHEN 'fully-collateralized' THEN 2 END AS old_rank
  FROM priced p
), judged AS (
  SELECT r.*,
         CASE WHEN r.outstanding = 0 THEN 'no-exposure'
              WHEN r.collateral_sats = 0 THEN 'no-collateral'
              ELSE (ARRAY['under-liquidation', 'under-margin-call', 'fully-collateralized'])[1 +
                CASE WHEN r.old_rank IS NULL OR r.raw_rank <= r.old_rank THEN r.raw_rank
                     ELSE GREATEST(r.old_rank, r.buffered_rank) END]
         END AS new_state
  FROM ranked r
), changed AS (
  UPDATE credit_facilities f
  SET collateral_value_cents = j.value, collateral_to_loan_ratio = j.ratio,
      collateralization_state = j.new_state, valued_at = now()
  FROM judged j
  WHERE f.id = j.id AND (j.value IS DISTINCT FROM j.old_value OR j.ratio IS DISTINCT FROM j.old_ratio
                         OR j.new_state <> j.old_state)
  RETURNING f.id
), transitions AS (
  INSERT INTO collateral_transitions (valuation_id, facility_id, from_state, to_state, cover)
  SELECT CAST(:run AS uuid), j.id, j.old_state, j.new_state, j.ratio FROM judged j WHERE j.new_state <> j.old_state
  RETURNING facility_id
)
SELECT (SELECT count(*) FROM judged)::integer AS valued, (SELECT count(*) FROM changed)::integer AS changed,
       (SELECT count(*) FROM transitions)::integer AS transitions`;

/** The notice a transition deserves: into margin call, to the liquidation level, or recovered. */
const NOTICES_PAGE_SQL = `
SELECT facility_id, kind, CAST(CAST(at AT TIME ZONE 'UTC' AS date) AS text) AS valuation_date FROM (
  SELECT t.facility_id, t.at,
         CASE WHEN t.to_state = 'under-liquidation' THEN 'liquidation-call'
              WHEN t.to_state = 'under-margin-call' AND t.from_state <> 'under-liquidation' THEN 'margin-call'
              WHEN t.to_state = 'fully-collateralized'
                   AND t.from_state IN ('under-margin-call', 'under-liquidation') THEN 'collateral-recovered'
         END AS kind
  FROM collateral_transitions t
  WHERE t.valuation_id = CAST(:run AS uuid) AND t.facility_id > CAST(:after AS uuid)
    AND t.facility_id <= CAST(:upto AS uuid)
) n WHERE kind IS NOT NULL ORDER BY facility_id LIMIT ${ENQUEUE_PAGE_SIZE}`;

const NEXT_BATCH_END_SQL = `
SELECT id AS upto FROM (
  SELECT id FROM credit_facilities WHERE id > CAST(:after AS uuid) ORDER BY id LIMIT :size
) batch ORDER BY id DESC LIMIT 1`;

/**
 * Portfolio valuation (the `sync` job). The price is the median of the sources that answer with a fresh
 * quote (at least two when two or more are configured): a quote older than `maxQuoteAgeSeconds`, or dated
 * ahead of this machine's clock by more than a minute, counts as no answer. A price that moves more than
 * `maxPriceJump` from the last accepted one needs two sources agreeing on it, otherwise it is refused
 * before anything is written and the job retries (one wrong tick such as 0.01 changes no state and sends
 * no notice). Facilities are then valued batch by batch of ids, each batch one transaction that also
 * enqueues its transitions' notices (keyed per facility, kind and day), so a crash between batches is
 * finished by the re-run without a duplicate. The run ends by recording the portfolio in
 * `collateral_valuations`, whose price is the last accepted one.
 */
export function createPortfolioService(deps: {
  db: Database;
  jobs: Pick<JobTracker, 'enqueueUntyped'>;
  priceSource: PriceSource | readonly PriceSource[];
  maxPriceJump?: string;
  /** How old a quote may be, in seconds (default 300). */
  maxQuoteAgeSeconds?: number;
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
  const maxJump = share(deps.maxPriceJump ?? DEFAULT_MAX_PRICE_JUMP, 'max price jump');
  const buffer = deps.upgradeBuffer ?? DEFAULT_UPGRADE_BUFFER;
  share(buffer, 'upgrade buffer');
  const batchSize = deps.batchSize ?? VALUATION_BATCH_SIZE;
  const maxAgeSeconds = deps.maxQuoteAgeSeconds ?? DEFAULT_MAX_QUOTE_AGE_SECONDS;
  if (!Number.isInteger(maxAgeSeconds) || maxAgeSeconds < 1) {
    throw new Error(
      `max quote age must be a whole number of seconds, at least 1, got ${String(maxAgeSeconds)}`,
    );
  }
  const now = deps.now ?? (() => new Date());

  /** The quote's cents when it is fresh; a stale or future-dated quote is refused like a failed request. */
  async function freshQuote(source: PriceSource, signal?: AbortSignal): Promise<bigint> {
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
    return quote.cents;
  }

  async function acceptedPrice(signal?: AbortSignal): Promise<{ price: bigint; quotes: number }> {
    const settled = await Promise.allSettled(sources.map((s) => freshQuote(s, signal)));
    const quotes = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const needed = Math.min(2, sources.length);
    if (quotes.length < needed) {
      const reasons = settled.flatMap((r) =>
        r.status === 'rejected' ? [String((r.reason as Error).message)] : [],
      );
      throw new PriceSourceError(
        `only ${quotes.length} of ${sources.length} price sources answered (${needed} needed): ${reasons.join('; ')}`,
      );
    }
    const price = median(quotes);
    const last = (
      await deps.db.query<{ cents: bigint }>(
        'SELECT btc_usd_cents AS cents FROM collateral_valuations ORDER BY valued_at DESC, id DESC LIMIT 1',
      )
    ).rows[0]?.cents;
    if (last !== undefined) {
      const jump = Math.abs(Number(price - last)) / Number(last);
      const agreeing = quotes.filter((q) => Math.abs(Number(q - price)) <= Number(price) * AGREEMENT).length;
      if (jump > maxJump && agreeing < 2) {
        throw new PriceSourceError(
          `price ${price} cents moves ${(jump * 100).toFixed(1)} % from the last accepted ${last} cents ` +
            `(limit ${maxJump * 100} %) and no second source agrees: refused`,
        );
      }
    }
    return { price, quotes: quotes.length };
  }

  async function enqueueNotices(tx: Queryable, run: string, after: string, upto: string): Promise<number> {
    let enqueued = 0;
    let from = after;
    for (;;) {
      const page = await tx.query<{ facility_id: string; kind: string; valuation_date: string }>(
        NOTICES_PAGE_SQL,
        {
          run: uuid(run),
          after: uuid(from),
          upto: uuid(upto),
        },
      );
      if (page.rows.length === 0) break;
      await deps.jobs.enqueueUntyped(
        page.rows.map((n) => ({
          type: 'notification',
          payload: { kind: n.kind, facilityId: n.facility_id, valuationDate: n.valuation_date },
          idempotencyKey: `${n.kind}:${n.facility_id}:${n.valuation_date}`,
        })),
        { db: tx },
      );
      enqueued += page.rows.length;
      from = page.rows[page.rows.length - 1]!.facility_id;
      if (page.rows.length < ENQUEUE_PAGE_SIZE) break;
    }
    return enqueued;
  }

  return {
    async revalue(signal) {
      const { price, quotes } = await acceptedPrice(signal);
      const run = randomUUID();
      const result: ValuationResult = {
        valuationId: run,
        btcUsdCents: price,
        quotes,
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
           under_liquidation, no_collateral, no_exposure)
         SELECT CAST(:run AS uuid), :price, :valued,
                count(*) FILTER (WHERE collateralization_state IN ('under-margin-call', 'under-liquidation')), :changed,
                COALESCE(sum(collateral_value_cents), 0), COALESCE(sum(drawn_principal_cents + accrued_interest_cents), 0),
                round(sum(collateral_value_cents)::numeric / NULLIF(sum(drawn_principal_cents + accrued_interest_cents), 0), 4),
                count(*) FILTER (WHERE collateralization_state = 'fully-collateralized'),
                count(*) FILTER (WHERE collateralization_state = 'under-margin-call'),
                count(*) FILTER (WHERE collateralization_state = 'under-liquidation'),
                count(*) FILTER (WHERE collateralization_state = 'no-collateral'),
                count(*) FILTER (WHERE collateralization_state = 'no-exposure')
         FROM credit_facilities WHERE status = 'active'
         RETURNING below_threshold AS below`,
        { run: uuid(run), price, valued: result.facilitiesValued, changed: result.facilitiesChanged },
      );
      result.belowMarginCall = record.rows[0]!.below;
      return result;
    },
  };
}
