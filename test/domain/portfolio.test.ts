import http from 'node:http';
import { SESv2Client, SendEmailCommand } from '@aws-sdk/client-sesv2';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { createHttpPriceSource, createSesNotifier, type PriceSource } from '../../shared/domain/index.js';
import { createPortfolioService } from '../../shared/domain/portfolio.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { domainHarness, fixedPrice, insertFacility, movablePrice } from './support.js';

let t: TestDatabase;
let server: http.Server;
let baseUrl: string;
/** What the local price server does next, per path. */
const isoSecondsAgo = (s: number) => new Date(Date.now() - s * 1000).toISOString();
const behaviours: Record<string, (res: http.ServerResponse) => void> = {
  '/ok': (res) =>
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ price: '100000.00', at: isoSecondsAgo(5) })),
  '/coingecko': (res) =>
    res
      .writeHead(200)
      .end(
        JSON.stringify({ bitcoin: { usd: 98765.43, last_updated_at: Math.floor(Date.now() / 1000) - 30 } }),
      ),
  '/undated': (res) => res.writeHead(200).end('{"price":"100000.00"}'),
  '/undated-coingecko': (res) => res.writeHead(200).end('{"bitcoin":{"usd":98765.43}}'),
  '/no-offset': (res) => res.writeHead(200).end('{"price":"100000.00","at":"2026-12-05T10:00:00"}'),
  '/stale': (res) => res.writeHead(200).end(JSON.stringify({ price: '100000.00', at: isoSecondsAgo(301) })),
  '/future': (res) => res.writeHead(200).end(JSON.stringify({ price: '100000.00', at: isoSecondsAgo(-600) })),
  '/not-json': (res) => res.writeHead(200).end('<html>maintenance</html>'),
  '/missing': (res) => res.writeHead(200).end('{"last":"100000"}'),
  '/zero': (res) => res.writeHead(200).end('{"price":"0"}'),
  '/negative': (res) => res.writeHead(200).end('{"price":-5}'),
  '/error': (res) => res.writeHead(500).end('{"error":"boom"}'),
  '/slow': (res) => {
    setTimeout(() => res.writeHead(200).end('{"price":"1.00"}'), 2000);
  },
};

beforeAll(async () => {
  t = await createTestDatabase();
  server = http.createServer((req, res) =>
    (behaviours[req.url ?? ''] ?? ((r) => r.writeHead(404).end()))(res),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  baseUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await t.drop();
});
beforeEach(async () => {
  await t.db.query(
    'TRUNCATE jobs, job_execution_records, interest_accruals, notifications, disbursals, approval_votes, approval_processes, approval_policies, committee_members, committees, collateral_transitions, collateral_valuations, price_observations, manual_prices, credit_facilities CASCADE',
  );
});

const signal = () => new AbortController().signal;
const today = () => new Date().toISOString().slice(0, 10);

const snapshot = async () =>
  (
    await t.db.query(
      `SELECT (SELECT count(*) FROM collateral_valuations)::int AS valuations,
              (SELECT count(*) FROM credit_facilities WHERE valued_at IS NOT NULL)::int AS valued,
              (SELECT count(*) FROM jobs WHERE job_type = 'notification')::int AS notifications`,
    )
  ).rows[0];

describe('price source', () => {
  test('reads a dated price exactly, in cents, from either accepted shape', async () => {
    const plain = await createHttpPriceSource({ url: `${baseUrl}/ok` }).btcUsdQuote();
    expect(plain.cents).toBe(10_000_000n);
    expect(Date.now() - plain.pricedAt.getTime()).toBeGreaterThanOrEqual(5000);
    expect(Date.now() - plain.pricedAt.getTime()).toBeLessThan(60_000);
    const coingecko = await createHttpPriceSource({ url: `${baseUrl}/coingecko` }).btcUsdQuote();
    expect(coingecko.cents).toBe(9_876_543n);
    expect(coingecko.pricedAt.getUTCMilliseconds()).toBe(0); // unix seconds
    expect(Date.now() - coingecko.pricedAt.getTime()).toBeGreaterThanOrEqual(29_000);
  });

  test('a malformed URL or timeout is refused at construction, before any job runs', () => {
    expect(() => createHttpPriceSource({ url: 'ftp://prices.example/btc' })).toThrow(/http\(s\) URL/);
    expect(() => createHttpPriceSource({ url: 'not a url' })).toThrow(/http\(s\) URL/);
    expect(() => createHttpPriceSource({ url: `${baseUrl}/ok`, timeoutMs: Number('soon') })).toThrow(
      /timeout must be 1 to 120000 ms, got NaN/,
    );
  });

  test.each([
    ['not JSON', '/not-json', /not JSON/],
    ['a missing price', '/missing', /no price in the answer/],
    ['a zero price', '/zero', /price must be positive/],
    ['a negative price', '/negative', /expected a positive decimal number, got -5/],
    ['an HTTP error', '/error', /HTTP 500/],
    ['a timeout', '/slow', /timed out after 300 ms/],
    ['an undated price', '/undated', /carries no time.*cannot be known to be fresh/],
    ['an undated CoinGecko price', '/undated-coingecko', /include_last_updated_at=true/],
    ['a time without an offset', '/no-offset', /at:/],
    ['a stale price (301 s old, limit 300 s)', '/stale', /s old \(limit 300 s\): refused as stale/],
    ['a price dated in the future', '/future', /in the future: refused/],
  ])('%s is a retryable failure that writes nothing', async (_name, path, message) => {
    await insertFacility(t.db, { principalCents: 1_000_000n, rate: '0.1', collateralSats: 100_000_000n });
    const { tracker, drain } = domainHarness(t.db, {
      price: createHttpPriceSource({ url: `${baseUrl}${path}`, timeoutMs: 300 }),
    });
    const { job } = await tracker.enqueue({ type: 'sync', payload: {} });
    await drain();
    const row = await tracker.getJob(job.id);
    expect(row!.status).toBe('retrying');
    expect(row!.lastError).toMatch(message);
    expect(await snapshot()).toEqual({ valuations: 0, valued: 0, notifications: 0 });
  });
});

const states = async () =>
  Object.fromEntries(
    (
      await t.db.query<{ id: string; collateralization_state: string }>(
        'SELECT id, collateralization_state FROM credit_facilities',
      )
    ).rows.map((r) => [r.id, r.collateralization_state]),
  );
const noticeKinds = async () =>
  (
    await t.db.query<{ kind: string }>(
      "SELECT payload->>'kind' AS kind FROM jobs WHERE job_type = 'notification' ORDER BY created_at, id",
    )
  ).rows.map((r) => r.kind);

describe('portfolio valuation', () => {
  test('values cover on total outstanding, stores the state, and notifies the transition once', async () => {
    // At 100,000.00 USD/BTC: 1 BTC against 50,000.00 → cover 2.0; 0.5 BTC against 40,000.00 drawn plus
    // 1,000.00 interest → 1.2195 (margin call; on principal alone it would be 1.25, fully collateralized).
    const healthy = await insertFacility(t.db, {
      principalCents: 5_000_000n,
      rate: '0.1',
      collateralSats: 100_000_000n,
    });
    const thin = await insertFacility(t.db, {
      principalCents: 4_000_000n,
      rate: '0.1',
      collateralSats: 50_000_000n,
    });
    await t.db.query(
      'UPDATE credit_facilities SET accrued_interest_cents = 100000 WHERE id = CAST(:id AS uuid)',
      {
        id: thin,
      },
    );
    const undrawn = await insertFacility(t.db, { principalCents: 0n, rate: '0.1', collateralSats: 10_000n });
    const bare = await insertFacility(t.db, { principalCents: 100n, rate: '0.1' });
    const { tracker, drain, notifications } = domainHarness(t.db, { price: fixedPrice(10_000_000n) });
    await tracker.enqueueMany([
      { type: 'sync', payload: {} },
      { type: 'sync', payload: {} }, // a second run: no transition, no second notice, no row written
    ]);
    await drain();
    const rows = (
      await t.db.query<{
        id: string;
        collateral_value_cents: bigint;
        collateral_to_loan_ratio: string | null;
      }>(
        'SELECT id, collateral_value_cents, collateral_to_loan_ratio FROM credit_facilities ORDER BY collateral_sats DESC, id',
      )
    ).rows;
    expect(rows).toEqual([
      { id: healthy, collateral_value_cents: 10_000_000n, collateral_to_loan_ratio: '2.0000' },
      { id: thin, collateral_value_cents: 5_000_000n, collateral_to_loan_ratio: '1.2195' },
      expect.objectContaining({
        id: undrawn,
        collateral_value_cents: 1_000n,
        collateral_to_loan_ratio: null,
      }),
      expect.objectContaining({ id: bare, collateral_value_cents: 0n, collateral_to_loan_ratio: '0.0000' }),
    ]);
    expect(await states()).toEqual({
      [healthy]: 'fully-collateralized',
      [thin]: 'under-margin-call',
      [undrawn]: 'no-exposure',
      [bare]: 'no-collateral',
    });
    expect(notifications.sent).toHaveLength(1);
    expect(notifications.sent[0]!.subject).toMatch(/Margin call/);
    expect(notifications.sent[0]!.body).toContain(thin);
    const runs = (
      await t.db.query<Record<string, unknown>>(
        `SELECT facilities_valued, facilities_changed, below_threshold, total_collateral_cents, total_outstanding_cents,
                weighted_cover, fully_collateralized, under_margin_call, under_liquidation, no_collateral, no_exposure
         FROM collateral_valuations ORDER BY valued_at, id`,
      )
    ).rows;
    const portfolio = {
      facilities_valued: 4,
      below_threshold: 1,
      total_collateral_cents: 15_001_000n,
      total_outstanding_cents: 9_100_100n,
      weighted_cover: '1.6484',
      fully_collateralized: 1,
      under_margin_call: 1,
      under_liquidation: 0,
      no_collateral: 1,
      no_exposure: 1,
    };
    expect(runs).toEqual([
      { ...portfolio, facilities_changed: 4 },
      { ...portfolio, facilities_changed: 0 },
    ]);
  });

  test('a cover exactly at a level is not below it', async () => {
    // 1 BTC at 100,000.00 against 80,000.00: exactly 125 %, the margin-call level → fully collateralized.
    // Against 95,238.10: 1.0500 rounded, but just below 105 % exactly → under liquidation.
    const atMargin = await insertFacility(t.db, {
      principalCents: 8_000_000n,
      rate: '0.1',
      collateralSats: 100_000_000n,
    });
    const belowLiquidation = await insertFacility(t.db, {
      principalCents: 9_523_810n,
      rate: '0.1',
      collateralSats: 100_000_000n,
    });
    const { services } = domainHarness(t.db, { price: fixedPrice(10_000_000n) });
    await services.portfolio.revalue(signal());
    expect(await states()).toEqual({
      [atMargin]: 'fully-collateralized',
      [belowLiquidation]: 'under-liquidation',
    });
    expect(await noticeKinds()).toEqual(['liquidation-call']);
  });

  test('crossed then recovered: one notice each way; a wobble inside the buffer changes nothing', async () => {
    // 1 BTC against 80,000.00 drawn: margin call below 100,000.00 USD/BTC, back up only from 104,000.00.
    const f = await insertFacility(t.db, {
      principalCents: 8_000_000n,
      rate: '0.1',
      collateralSats: 100_000_000n,
    });
    const price = movablePrice(11_000_000n);
    const { services, drain, notifications } = domainHarness(t.db, { price: price.source });
    const run = async (cents: bigint) => {
      price.set(cents);
      const r = await services.portfolio.revalue(signal());
      await drain();
      return r;
    };
    await run(11_000_000n);
    expect(await states()).toEqual({ [f]: 'fully-collateralized' });
    await run(9_900_000n); // cover 1.2375: margin call
    await run(9_800_000n); // still below: no second notice
    await run(10_200_000n); // 1.2750: above the level, inside the buffer: stays under margin call
    expect(await states()).toEqual({ [f]: 'under-margin-call' });
    const recovered = await run(10_500_000n); // 1.3125 ≥ 1.25 + 0.05: recovered
    expect(recovered).toMatchObject({ transitions: 1, notices: 1 });
    expect(await states()).toEqual({ [f]: 'fully-collateralized' });
    expect(notifications.sent.map((m) => m.subject)).toEqual([
      `Margin call (${today()}): collateral below the required level`,
      `Collateral restored (${today()}): fully collateralized again`,
    ]);
    const transitions = (
      await t.db.query<{ from_state: string; to_state: string }>(
        'SELECT from_state, to_state FROM collateral_transitions ORDER BY at',
      )
    ).rows;
    expect(transitions).toEqual([
      { from_state: 'no-exposure', to_state: 'fully-collateralized' },
      { from_state: 'fully-collateralized', to_state: 'under-margin-call' },
      { from_state: 'under-margin-call', to_state: 'fully-collateralized' },
    ]);
  });

  test('one wrong tick (0.01) is refused: no state changes, no notice, the job retries', async () => {
    const f = await insertFacility(t.db, {
      principalCents: 5_000_000n,
      rate: '0.1',
      collateralSats: 100_000_000n,
    });
    const price = movablePrice(10_000_000n);
    const { tracker, drain, services } = domainHarness(t.db, { price: price.source });
    await services.portfolio.revalue(signal());
    await drain();
    const before = await snapshot();
    price.set(1n);
    const { job } = await tracker.enqueue({ type: 'sync', payload: {} });
    await drain();
    expect(await tracker.getJob(job.id)).toMatchObject({
      status: 'retrying',
      lastError: expect.stringMatching(
        /source 1 1 cents is more than 20 % from the reference 10000000 cents .*: refused until all the sources agree on it in 3 consecutive runs \(this is run 1\)/,
      ),
    });
    expect(await states()).toEqual({ [f]: 'fully-collateralized' });
    expect(await snapshot()).toEqual(before);
    expect(await noticeKinds()).toEqual([]);
  });

  test('a real move beyond the guard is accepted once all sources agree on it three runs in a row', async () => {
    const f = await insertFacility(t.db, {
      principalCents: 5_000_000n,
      rate: '0.1',
      collateralSats: 100_000_000n,
    });
    const a = movablePrice(10_000_000n);
    const b = movablePrice(10_010_000n);
    const c = movablePrice(1n);
    const { services } = domainHarness(t.db, { price: [a.source, b.source, c.source] });
    // The first price ever: no reference yet; the median of three, a wrong third one included.
    expect(await services.portfolio.revalue(signal())).toMatchObject({
      btcUsdCents: 10_000_000n,
      quotes: 3,
      basis: 'sources',
    });
    // A crash that two of three sources report while the third is wrong: never accepted by itself (an
    // operator accepts a price by hand meanwhile), nothing written.
    a.set(6_000_000n);
    b.set(6_001_000n);
    c.set(100n);
    for (const run of [1, 2, 3, 4]) {
      await expect(services.portfolio.revalue(signal()), `run ${run}`).rejects.toThrow(
        /not all 3 sources agree on a price: refused/,
      );
      expect(await states()).toEqual({ [f]: 'fully-collateralized' });
    }
    // All three agree on 60,010.00 (a 40 % move): refused twice, accepted on the third run in a row.
    c.set(6_002_000n);
    for (const run of [1, 2]) {
      await expect(services.portfolio.revalue(signal())).rejects.toThrow(
        new RegExp(`in 3 consecutive runs \\(this is run ${run}\\)`),
      );
      expect(await states()).toEqual({ [f]: 'fully-collateralized' });
    }
    expect(await services.portfolio.revalue(signal())).toMatchObject({
      btcUsdCents: 6_001_000n,
      basis: 'sustained-move',
      quotes: 3,
    });
    expect(await states()).toEqual({ [f]: 'under-margin-call' });
    // Only one of three answers: refused (two are needed).
    const failing: PriceSource = {
      btcUsdQuote: async () => {
        throw new Error('down');
      },
    };
    const lonely = domainHarness(t.db, { price: [a.source, failing, failing] });
    await expect(lonely.services.portfolio.revalue(signal())).rejects.toThrow(
      /only 1 of 3 price sources answered/,
    );
  });

  test('a stale or future-dated quote counts as no answer: the fresh ones price the run', async () => {
    const f = await insertFacility(t.db, {
      principalCents: 5_000_000n,
      rate: '0.1',
      collateralSats: 100_000_000n,
    });
    const a = movablePrice(10_000_000n);
    const b = movablePrice(10_020_000n);
    const c = movablePrice(4_000_000n); // counted, the median of three would be 100,000.00 from 3 quotes
    c.pricedSecondsAgo(3600);
    const { services } = domainHarness(t.db, { price: [a.source, b.source, c.source] });
    // The median of the two fresh quotes: for an even count, the mean of the middle two.
    expect(await services.portfolio.revalue(signal())).toMatchObject({ btcUsdCents: 10_010_000n, quotes: 2 });
    expect(await states()).toEqual({ [f]: 'fully-collateralized' });
    // Two of three stale or from the future: one fresh answer is not enough, nothing is written.
    b.pricedSecondsAgo(-3600);
    a.pricedSecondsAgo(301);
    const before = await snapshot();
    await expect(services.portfolio.revalue(signal())).rejects.toThrow(
      /only 0 of 3 price sources answered .*refused as stale.*in the future: refused.*refused as stale/,
    );
    a.pricedSecondsAgo(299);
    await expect(services.portfolio.revalue(signal())).rejects.toThrow(/only 1 of 3 price sources answered/);
    expect(await snapshot()).toEqual(before);
    // A quote a little ahead of this clock (within the minute two servers' clocks may differ) counts.
    b.pricedSecondsAgo(-30);
    expect(await services.portfolio.revalue(signal())).toMatchObject({ btcUsdCents: 10_010_000n, quotes: 2 });
  });

  test('a max quote age that is not a whole number of seconds from 1 is refused at construction', () => {
    for (const maxQuoteAgeSeconds of [0, -5, 1.5, Number.NaN])
      expect(() =>
        createPortfolioService({
          db: t.db,
          jobs: domainHarness(t.db).tracker,
          priceSource: fixedPrice(10_000_000n),
          maxQuoteAgeSeconds,
        }),
      ).toThrow(/max quote age must be a whole number of seconds, at least 1/);
  });

  test('a valuation writes only the facilities whose figures or state changed', async () => {
    // 100 facilities opened today (nothing to accrue yet), each at 200.01 % cover or more, fully collateralized.
    await t.db.query(
      `INSERT INTO credit_facilities (customer_email, facility_limit_cents, drawn_principal_cents, annual_rate,
                                      collateral_sats)
       SELECT 'b' || g || '@example.com', 100000000, 1000000 + g * 997, 0.1, 200000000 + g * 1000
       FROM generate_series(1, 100) g`,
    );
    // One opened 30 days ago: 1.26 BTC against 100,000.00 drawn is 126 % cover at 100,000.00 USD/BTC, just
    // above margin call (125 %); a month of interest at 10 % takes it below.
    const moved = await insertFacility(t.db, {
      email: 'moved@example.com',
      principalCents: 10_000_000n,
      rate: '0.1',
      collateralSats: 126_000_000n,
      createdAt: new Date(Date.now() - 30 * 86_400_000).toISOString(),
    });
    // xmin: the transaction that last wrote each row version, read independently of the service's counts.
    const versions = async () =>
      new Map(
        (
          await t.db.query<{ id: string; v: string }>('SELECT id, xmin::text AS v FROM credit_facilities')
        ).rows.map((r) => [r.id, r.v]),
      );
    const rewrittenSince = async (before: Map<string, string>) =>
      [...(await versions())].filter(([id, v]) => before.get(id) !== v).map(([id]) => id);
    const { services } = domainHarness(t.db, { price: fixedPrice(10_000_000n) });
    expect(await services.portfolio.revalue(signal())).toMatchObject({
      facilitiesValued: 101,
      facilitiesChanged: 101,
      notices: 0,
    });
    expect(await states()).toMatchObject({ [moved]: 'fully-collateralized' });

    // Same price, same figures: no facility row is written.
    const first = await versions();
    expect(await services.portfolio.revalue(signal())).toMatchObject({ facilitiesChanged: 0 });
    expect(await rewrittenSince(first)).toEqual([]);

    // The accrual job accrues the old facility's 30 days; the others opened today have none yet.
    await services.credit.accrueDailyInterest(undefined, signal());
    const accrued = (
      await t.db.query<{ id: string; accrued: bigint }>(
        'SELECT id, accrued_interest_cents AS accrued FROM credit_facilities WHERE accrued_interest_cents > 0',
      )
    ).rows;
    expect(accrued.map((r) => r.id)).toEqual([moved]);
    const interest = accrued[0]!.accrued;

    // Revalued at the same price: only that facility's row is written, with its new state and one notice.
    const beforeRun = await versions();
    const result = await services.portfolio.revalue(signal());
    expect(result).toMatchObject({
      facilitiesValued: 101,
      facilitiesChanged: 1,
      transitions: 1,
      notices: 1,
      belowMarginCall: 1,
    });
    expect(await rewrittenSince(beforeRun)).toEqual([moved]);
    expect(await states()).toMatchObject({ [moved]: 'under-margin-call' });
    expect(await noticeKinds()).toEqual(['margin-call']);

    // The portfolio record: totals from the figures above (collateral at 0.1 cent per sat).
    const totalCollateral = 100n * 20_000_000n + 100n * 5050n + 12_600_000n;
    const totalOutstanding = 100n * 1_000_000n + 997n * 5050n + 10_000_000n + interest;
    const record = (
      await t.db.query<Record<string, unknown>>(
        `SELECT btc_usd_cents, facilities_valued, facilities_changed, below_threshold, total_collateral_cents,
                total_outstanding_cents, weighted_cover::text AS weighted_cover, fully_collateralized,
                under_margin_call, under_liquidation, no_collateral, no_exposure
         FROM collateral_valuations WHERE id = CAST(:id AS uuid)`,
        { id: result.valuationId },
      )
    ).rows[0];
    const cover = (totalCollateral * 100_000n + totalOutstanding * 5n) / (totalOutstanding * 10n); // 4 places, half up
    expect(record).toEqual({
      btc_usd_cents: 10_000_000n,
      facilities_valued: 101,
      facilities_changed: 1,
      below_threshold: 1,
      total_collateral_cents: totalCollateral,
      total_outstanding_cents: totalOutstanding,
      weighted_cover: `${cover / 10_000n}.${String(cover % 10_000n).padStart(4, '0')}`,
      fully_collateralized: 100,
      under_margin_call: 1,
      under_liquidation: 0,
      no_collateral: 0,
      no_exposure: 0,
    });

    // And at the same price again, nothing is rewritten.
    const settled = await versions();
    expect(await services.portfolio.revalue(signal())).toMatchObject({ facilitiesChanged: 0, notices: 0 });
    expect(await rewrittenSince(settled)).toEqual([]);
  });

  test('batched valuation matches the single pass and a crash between batches sends no duplicate notice', async () => {
    await t.db.query(
      `INSERT INTO credit_facilities (customer_email, facility_limit_cents, drawn_principal_cents, annual_rate,
                                      collateral_sats)
       SELECT 'b' || g || '@example.com', 100000000, 1000000 + g * 997, 0.1, 1000000 + (g % 7) * 100000
       FROM generate_series(1, 300) g`,
    );
    const picture = async () => ({
      rows: (
        await t.db.query(
          'SELECT id, collateral_value_cents, collateral_to_loan_ratio, collateralization_state FROM credit_facilities ORDER BY id',
        )
      ).rows,
      notices: (
        await t.db.query(
          `SELECT payload->>'facilityId' AS facility, payload->>'kind' AS kind FROM jobs
           WHERE job_type = 'notification' ORDER BY 1, 2`,
        )
      ).rows,
    });
    const make = (batchSize: number, afterBatch?: (n: number) => Promise<void>) => {
      const h = domainHarness(t.db, { price: fixedPrice(10_000_000n) });
      return createPortfolioService({
        db: t.db,
        jobs: h.tracker,
        priceSource: fixedPrice(10_000_000n),
        batchSize,
        afterBatch,
      });
    };
    const single = await make(1_000_000).revalue(signal());
    expect(single.batches).toBe(1);
    const expected = await picture();
    expect(expected.notices.length).toBeGreaterThan(0);
    await t.db.query(
      "UPDATE credit_facilities SET collateral_value_cents = NULL, collateral_to_loan_ratio = NULL, collateralization_state = 'no-exposure'",
    );
    await t.db.query('TRUNCATE jobs, notifications, collateral_transitions, collateral_valuations');
    await expect(
      make(23, async (n) => {
        if (n === 4) throw new Error('Lambda timed out');
      }).revalue(signal()),
    ).rejects.toThrow(/timed out/);
    const rerun = await make(23).revalue(signal());
    expect(rerun.batches).toBe(Math.ceil(300 / 23));
    const after = await picture();
    expect(after).toEqual(expected);
    expect(rerun.belowMarginCall).toBe(single.belowMarginCall);
  });
});

describe('portfolio valuation at scale', () => {
  test('enqueues a margin call for every facility below the threshold, in pages, dated by the database', async () => {
    // 1,201 thin facilities (0.01 BTC against 5,000.00: ratio 0.2 at 100,000.00) and one healthy one.
    await t.db.query(
      `INSERT INTO credit_facilities (customer_email, facility_limit_cents, drawn_principal_cents, annual_rate,
                                      collateral_sats)
       SELECT 'thin' || g || '@example.com', 10000000, 500000, 0.1, 1000000 FROM generate_series(1, 1201) g`,
    );
    // 1,000 BTC against one cent: a ratio of 10^10, which once overflowed the ratio column.
    const whale = await insertFacility(t.db, {
      principalCents: 1n,
      rate: '0.1',
      collateralSats: 100_000_000_000n,
    });
    const { services } = domainHarness(t.db, { price: fixedPrice(10_000_000n) });
    const result = await services.portfolio.revalue(signal());
    expect(result).toMatchObject({ btcUsdCents: 10_000_000n, facilitiesValued: 1202, notices: 1201 });
    const today = (await t.db.query<{ d: string }>("SELECT CAST(now() AT TIME ZONE 'UTC' AS date) AS d"))
      .rows[0]!.d;
    const jobs = await t.db.query<{ n: number; facilities: number; dated_today: number; keyed: number }>(
      `SELECT count(*)::int AS n, count(DISTINCT payload->>'facilityId')::int AS facilities,
              count(*) FILTER (WHERE payload->>'valuationDate' = :today)::int AS dated_today,
              count(*) FILTER (WHERE idempotency_key = 'transition:' || (payload->>'transitionId')
                                 AND t.facility_id = CAST(payload->>'facilityId' AS uuid))::int AS keyed
       FROM jobs LEFT JOIN collateral_transitions t ON t.id = CAST(payload->>'transitionId' AS uuid)
       WHERE job_type = 'notification' AND payload->>'kind' = 'liquidation-call'`,
      { today },
    );
    expect(jobs.rows[0]).toEqual({ n: 1201, facilities: 1201, dated_today: 1201, keyed: 1201 });
    expect(
      (
        await t.db.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM jobs WHERE payload->>'facilityId' = :whale`,
          { whale },
        )
      ).rows[0]!.n,
    ).toBe(0);
    const whaleRow = await t.db.query(
      'SELECT collateral_value_cents, collateral_to_loan_ratio FROM credit_facilities WHERE id = CAST(:id AS uuid)',
      { id: whale },
    );
    expect(whaleRow.rows[0]).toEqual({
      collateral_value_cents: 10_000_000_000n,
      collateral_to_loan_ratio: '10000000000.0000',
    });
    // A second valuation the same day writes nothing and enqueues no second margin call.
    expect(await services.portfolio.revalue(signal())).toMatchObject({
      facilitiesChanged: 0,
      notices: 0,
      belowMarginCall: 1201,
    });
    expect(await snapshot()).toEqual({ valuations: 2, valued: 1202, notifications: 1201 });
  });

  test("collateral value rounds down to the cent, in the lender's favour", async () => {
    // At 12,345.50 USD/BTC: 1 sat = 0.0123455 cents → 0; 500,000 sats = 6,172.75 cents → 6,172 (down, not
    // half up to 6,173).
    const oneSat = await insertFacility(t.db, { principalCents: 100n, rate: '0.1', collateralSats: 1n });
    const halfSats = await insertFacility(t.db, {
      principalCents: 100n,
      rate: '0.1',
      collateralSats: 500_000n,
    });
    const { services } = domainHarness(t.db, { price: fixedPrice(1_234_550n) });
    await services.portfolio.revalue(signal());
    const values = await t.db.query<{ id: string; collateral_value_cents: bigint }>(
      'SELECT id, collateral_value_cents FROM credit_facilities ORDER BY collateral_sats',
    );
    expect(values.rows).toEqual([
      { id: oneSat, collateral_value_cents: 0n },
      { id: halfSats, collateral_value_cents: 6_172n },
    ]);
  });
});

describe('SES notifier', () => {
  test('sends a plain-text e-mail from the configured identity, tagged with the outbox key', async () => {
    const ses = mockClient(SESv2Client);
    ses.on(SendEmailCommand).resolves({ MessageId: 'ses-123' });
    const notifier = createSesNotifier({
      fromAddress: 'loans@bank.example',
      client: new SESv2Client({ region: 'us-east-1' }),
    });
    const result = await notifier.send({
      to: 'ann@example.com',
      subject: 'Payment reminder',
      body: 'Pay up',
      idempotencyKey: 'payment-reminder:abc:2026-12-01',
    });
    expect(result).toEqual({ messageId: 'ses-123' });
    expect(ses).toHaveReceivedCommandWith(SendEmailCommand, {
      FromEmailAddress: 'loans@bank.example',
      Destination: { ToAddresses: ['ann@example.com'] },
      EmailTags: [{ Name: 'outbox_key', Value: 'payment-reminder_abc_2026-12-01' }],
    });
    ses.restore();
  });

  test('a sender that is not an e-mail address is refused at construction', () => {
    expect(() =>
      createSesNotifier({ fromAddress: '', client: new SESv2Client({ region: 'us-east-1' }) }),
    ).toThrow(/SES sender must be an e-mail address/);
  });

  test('an SES error is a failed delivery (retried by the job)', async () => {
    const ses = mockClient(SESv2Client);
    ses
      .on(SendEmailCommand)
      .rejects(Object.assign(new Error('Throttling'), { name: 'TooManyRequestsException' }));
    const notifier = createSesNotifier({
      fromAddress: 'loans@bank.example',
      client: new SESv2Client({ region: 'us-east-1' }),
    });
    await expect(
      notifier.send({ to: 'a@b.c', subject: 's', body: 'b', idempotencyKey: 'k' }),
    ).rejects.toThrow('Throttling');
    ses.restore();
  });
});
