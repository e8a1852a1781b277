import { Writable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { valuationEnvironment } from '../../infra/settings.js';
import { runCli } from '../../shared/cli/main.js';
import {
  acceptPriceByHand,
  castVote,
  createApprovalProcess,
  type PriceSource,
  withdrawApprovalProcess,
} from '../../shared/domain/index.js';
import { lendingSettingsFromEnv } from '../../shared/domain/settings.js';
import { dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { acceptedPrice, disbursalPolicy, domainHarness, insertFacility, movablePrice } from './support.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());
beforeEach(async () => {
  await t.db.query(
    'TRUNCATE jobs, job_execution_records, interest_accruals, notifications, disbursals, approval_votes, approval_processes, approval_policies, committee_members, committees, collateral_transitions, collateral_valuations, price_observations, manual_prices, credit_facilities CASCADE',
  );
});

const signal = () => new AbortController().signal;
const ONE_BTC = 100_000_000n;
/** 100,000.00 USD/BTC, the true price throughout. */
const TRUE = 10_000_000n;

const one = async <T extends Record<string, unknown>>(sql: string, params = {}) =>
  (await t.db.query<T>(sql, params)).rows[0]!;
/** What a refused run must not have written: accepted prices, facility states, transitions, notices. */
const written = () =>
  one(
    `SELECT (SELECT count(*) FROM collateral_valuations)::int AS valuations,
            (SELECT max(btc_usd_cents) FROM collateral_valuations) AS highest_price,
            (SELECT min(btc_usd_cents) FROM collateral_valuations) AS lowest_price,
            (SELECT count(*) FROM collateral_transitions)::int AS transitions,
            (SELECT count(*) FROM jobs WHERE job_type = 'notification')::int AS notices,
            (SELECT string_agg(collateralization_state, ',' ORDER BY id) FROM credit_facilities) AS states`,
  );

const down: PriceSource = {
  btcUsdQuote: async () => {
    throw new Error('connection refused');
  },
};

/** 1 BTC against 50,000.00 drawn: healthy at the true price, liquidated at half of it. */
const healthyFacility = () =>
  insertFacility(t.db, {
    principalCents: 5_000_000n,
    rate: '0.1',
    limitCents: 100_000_000n,
    collateralSats: ONE_BTC,
  });

describe('defect 1: one wrong source among two cannot set or walk the price', () => {
  test('two sources, one reading +39 % and climbing: every run refused, nothing written, no disbursal', async () => {
    await healthyFacility();
    const good = movablePrice(TRUE);
    const bad = movablePrice(TRUE);
    const { services, tracker, drain } = domainHarness(t.db, { price: [good.source, bad.source] });
    expect(await services.portfolio.revalue(signal())).toMatchObject({ btcUsdCents: TRUE, quotes: 2 });
    const before = await written();
    // Today's code accepted the mean (119,500.00) and walked on from there to 355,044.63 in 7 runs.
    let wrong = 13_900_000n;
    for (let run = 0; run < 7; run++) {
      bad.set(wrong);
      await expect(services.portfolio.revalue(signal())).rejects.toThrow(
        /not all 2 sources agree on a price: refused/,
      );
      wrong = (wrong * 119n) / 100n;
    }
    expect(await written()).toEqual(before);
    // A disbursal that only the walked price would cover (100,000.00 more against 1 BTC) is refused.
    await disbursalPolicy(t.db, ['ann']);
    const facility = await healthyFacility();
    const processId = await createApprovalProcess(t.db, tracker, {
      facilityId: facility,
      amountCents: 10_000_000n,
    });
    await castVote(t.db, tracker, { processId, voter: 'ann', approve: true });
    await drain();
    expect(await one('SELECT status, failure_reason FROM approval_processes')).toEqual({
      status: 'failed',
      failure_reason: 'the disbursal would leave the facility below its margin-call cover',
    });
    expect(await one('SELECT count(*)::int AS n FROM disbursals')).toEqual({ n: 0 });
  });

  test('two sources, one falling to 50,000.00 in four runs: no facility moves, no notice', async () => {
    await healthyFacility();
    const good = movablePrice(TRUE);
    const bad = movablePrice(TRUE);
    const { services } = domainHarness(t.db, { price: [good.source, bad.source] });
    await services.portfolio.revalue(signal());
    const before = await written();
    for (const wrong of [8_500_000n, 7_200_000n, 6_100_000n, 5_000_000n]) {
      bad.set(wrong);
      await expect(services.portfolio.revalue(signal())).rejects.toThrow(/refused/);
    }
    expect(await written()).toEqual(before);
    expect(before.states).toBe('fully-collateralized');
  });

  test('two sources 15 % apart (inside the jump guard) disagree: refused, not averaged', async () => {
    await healthyFacility();
    const good = movablePrice(TRUE);
    const bad = movablePrice(TRUE);
    const { services } = domainHarness(t.db, { price: [good.source, bad.source] });
    await services.portfolio.revalue(signal());
    bad.set(11_500_000n);
    await expect(services.portfolio.revalue(signal())).rejects.toThrow(
      /the price sources disagree by more than 2 % \(source 1 10000000 cents, source 2 11500000 cents\): refused/,
    );
    // Within the tolerance they agree, and the price is their median (the mean of the two).
    bad.set(10_150_000n);
    expect(await services.portfolio.revalue(signal())).toMatchObject({ btcUsdCents: 10_075_000n, quotes: 2 });
  });

  test('three sources with one down and one reading 70,000.00: refused, nothing written', async () => {
    await healthyFacility();
    const a = movablePrice(TRUE);
    const b = movablePrice(TRUE);
    const c = movablePrice(TRUE);
    const all = domainHarness(t.db, { price: [a.source, b.source, c.source] });
    await all.services.portfolio.revalue(signal());
    const before = await written();
    b.set(7_000_000n);
    const oneDown = domainHarness(t.db, { price: [a.source, b.source, down] });
    // Today's code accepted 85,000.00 (the mean of the two answers) and moved facilities.
    for (let run = 0; run < 4; run++) {
      await expect(oneDown.services.portfolio.revalue(signal())).rejects.toThrow(/refused/);
    }
    expect(await written()).toEqual(before);
    // Three sources with one down and two agreeing: priced by those two.
    b.set(10_010_000n);
    expect(await oneDown.services.portfolio.revalue(signal())).toMatchObject({
      btcUsdCents: 10_005_000n,
      quotes: 2,
    });
  });

  test('three sources with one wrong inside the guard: the median is a good quote', async () => {
    const a = movablePrice(TRUE);
    const b = movablePrice(10_020_000n);
    const c = movablePrice(TRUE);
    const { services } = domainHarness(t.db, { price: [a.source, b.source, c.source] });
    await services.portfolio.revalue(signal());
    c.set(11_900_000n);
    expect(await services.portfolio.revalue(signal())).toMatchObject({ btcUsdCents: 10_020_000n, quotes: 3 });
  });

  test('the reference is the median of the last accepted prices: one accepted step cannot walk it', async () => {
    // One source: every quote within the guard of the reference is accepted, but the reference is the
    // median of the last five accepted prices, not the last one.
    const source = movablePrice(TRUE);
    const { services } = domainHarness(t.db, { price: source.source });
    await services.portfolio.revalue(signal());
    source.set(11_900_000n); // +19 % of the reference: accepted
    expect(await services.portfolio.revalue(signal())).toMatchObject({ btcUsdCents: 11_900_000n });
    // +19 % again from there is +41.6 % from 100,000.00: judged against the median of (100,000.00,
    // 119,000.00), 109,500.00, it is 29 % away: refused (today's code judged it against 119,000.00).
    source.set(14_161_000n);
    await expect(services.portfolio.revalue(signal())).rejects.toThrow(
      /source 1 14161000 cents is more than 20 % from the reference 10950000 cents/,
    );
    expect(await one('SELECT max(btc_usd_cents) AS p FROM collateral_valuations')).toEqual({
      p: 11_900_000n,
    });
  });
});

describe('the jump guard judges each quote against the reference, at its limit', () => {
  test('a quote exactly 20 % away is accepted; 20.01 % away, or 25 % with both sources agreeing, is refused', async () => {
    const a = movablePrice(TRUE);
    const { services } = domainHarness(t.db, { price: a.source });
    await services.portfolio.revalue(signal());
    a.set(12_001_000n);
    await expect(services.portfolio.revalue(signal())).rejects.toThrow(/more than 20 % from the reference/);
    a.set(12_000_000n);
    expect(await services.portfolio.revalue(signal())).toMatchObject({ btcUsdCents: 12_000_000n });

    await t.db.query('TRUNCATE collateral_valuations, price_observations');
    const b = movablePrice(TRUE);
    const c = movablePrice(TRUE);
    const two = domainHarness(t.db, { price: [b.source, c.source] });
    await two.services.portfolio.revalue(signal());
    b.set(12_500_000n);
    c.set(12_510_000n);
    await expect(two.services.portfolio.revalue(signal())).rejects.toThrow(
      /source 1 12500000 cents, source 2 12510000 cents are more than 20 % from the reference 10000000 cents/,
    );
    expect(await one('SELECT count(*)::int AS n FROM collateral_valuations')).toEqual({ n: 1 });
  });
});

describe('defect 2: a real move is accepted; a stale price backs no disbursal', () => {
  test('one source, a real 25 % fall: refused twice, accepted on the third run, margin call sent', async () => {
    // 1 BTC against 70,000.00: 142.9 % at 100,000.00, 107 % at 75,000.00 (under margin call).
    const facility = await insertFacility(t.db, {
      principalCents: 7_000_000n,
      rate: '0.1',
      collateralSats: ONE_BTC,
    });
    const source = movablePrice(TRUE);
    const { services, drain, notifications } = domainHarness(t.db, { price: source.source });
    await services.portfolio.revalue(signal());
    source.set(7_500_000n);
    for (const run of [1, 2]) {
      await expect(services.portfolio.revalue(signal())).rejects.toThrow(
        new RegExp(`in 3 consecutive runs \\(this is run ${run}\\)`),
      );
    }
    expect(await services.portfolio.revalue(signal())).toMatchObject({
      btcUsdCents: 7_500_000n,
      basis: 'sustained-move',
      transitions: 1,
      notices: 1,
    });
    await drain();
    expect(await one('SELECT collateralization_state FROM credit_facilities')).toEqual({
      collateralization_state: 'under-margin-call',
    });
    expect(notifications.sent.map((m) => m.subject)).toEqual([expect.stringMatching(/^Margin call/)]);
    expect(notifications.sent[0]!.body).toContain(facility);
    // The move is now the price: the next run at the same level is accepted on its own.
    expect(await services.portfolio.revalue(signal())).toMatchObject({ btcUsdCents: 7_500_000n });
  });

  test('a move that does not hold in consecutive runs is never accepted', async () => {
    const source = movablePrice(TRUE);
    const { services } = domainHarness(t.db, { price: source.source });
    await services.portfolio.revalue(signal());
    for (const cents of [7_500_000n, 7_500_000n, 6_000_000n, 7_500_000n, 7_500_000n]) {
      source.set(cents);
      await expect(services.portfolio.revalue(signal())).rejects.toThrow(/refused/);
    }
    expect(await one('SELECT count(*)::int AS n FROM collateral_valuations')).toEqual({ n: 1 });
  });

  test('each accepted price records when it was priced and until when it backs a disbursal', async () => {
    const source = movablePrice(TRUE);
    source.pricedSecondsAgo(100);
    const { services } = domainHarness(t.db, { price: source.source });
    const run = await services.portfolio.revalue(signal());
    const row = await one<{ basis: string; valid_seconds: string; age: boolean }>(
      `SELECT basis, CAST(extract(epoch FROM valid_until - priced_at) AS text) AS valid_seconds,
              priced_at BETWEEN now() - interval '110 seconds' AND now() - interval '90 seconds' AS age
       FROM collateral_valuations WHERE id = CAST(:id AS uuid)`,
      { id: run.valuationId },
    );
    expect(row).toEqual({ basis: 'sources', valid_seconds: '900.000000', age: true });
  });

  test('the disbursal gate refuses a price older than the valuation max age (a 10-day-old one)', async () => {
    await disbursalPolicy(t.db, ['ann']);
    const { tracker, drain } = domainHarness(t.db);
    const open = async (ageSeconds: number) => {
      await t.db.query('TRUNCATE collateral_valuations');
      await acceptedPrice(t.db, TRUE, ageSeconds);
      const facilityId = await insertFacility(t.db, {
        principalCents: 0n,
        rate: '0.1',
        collateralSats: ONE_BTC,
      });
      const processId = await createApprovalProcess(t.db, tracker, { facilityId, amountCents: 8_000_000n });
      await castVote(t.db, tracker, { processId, voter: 'ann', approve: true });
      await drain();
      return one<{ status: string; failure_reason: string | null }>(
        'SELECT status, failure_reason FROM approval_processes WHERE id = CAST(:id AS uuid)',
        { id: processId },
      );
    };
    // Today's code disbursed 80,000.00 against a price 10 days old.
    expect(await open(10 * 86_400)).toEqual({
      status: 'failed',
      failure_reason: expect.stringMatching(
        /^the last accepted collateral price \(valued at .*\) is older than the valuation's max age/,
      ),
    });
    expect(await open(901)).toMatchObject({ status: 'failed' });
    expect(await open(890)).toEqual({ status: 'approved', failure_reason: null });
    expect(
      await one('SELECT count(*)::int AS n, sum(amount_cents)::bigint AS cents FROM disbursals'),
    ).toEqual({
      n: 1,
      cents: 8_000_000n,
    });
  });
});

describe('defect 3: one source named twice is one source', () => {
  test('the same URL in LANA_PRICE_URL and LANA_PRICE_URLS_EXTRA, however written, stops start-up', () => {
    for (const [first, again] of [
      ['https://prices.example/btc', 'https://prices.example/btc'],
      ['https://Prices.Example:443/btc', 'https://prices.example/btc#usd'],
      ['http://127.0.0.1:8080/p', 'http://127.0.0.1:8080/p'],
    ] as const) {
      expect(() =>
        lendingSettingsFromEnv({
          LANA_PRICE_URL: first,
          LANA_PRICE_URLS_EXTRA: `https://other.example/btc, ${again}`,
        }),
      ).toThrow(
        /invalid settings: LANA_PRICE_URLS_EXTRA=.*is the same price source as .*must name distinct sources/,
      );
    }
    // Different paths or ports are different sources.
    expect(
      lendingSettingsFromEnv({
        LANA_PRICE_URL: 'http://127.0.0.1:8080/p',
        LANA_PRICE_URLS_EXTRA: 'http://127.0.0.1:8081/p, http://127.0.0.1:8080/q',
      }).extraPriceUrls,
    ).toHaveLength(2);
  });

  test('the stack refuses it at synth, naming the context key', () => {
    expect(() =>
      valuationEnvironment({
        priceSourceUrl: 'https://prices.example/btc',
        extraPriceSourceUrls: ['https://PRICES.example/btc'],
      }),
    ).toThrow(
      /context key "extraPriceSourceUrls" names "https:\/\/PRICES.example\/btc", the same price source/,
    );
    expect(
      valuationEnvironment({
        priceSourceUrl: 'https://prices.example/btc',
        extraPriceSourceUrls: ['https://b.example/btc'],
        priceAgreement: '0.01',
        priceConfirmRuns: 4,
        maxValuationAgeSeconds: 600,
      }),
    ).toEqual({
      LANA_PRICE_URLS_EXTRA: 'https://b.example/btc',
      LANA_PRICE_AGREEMENT: '0.01',
      LANA_PRICE_CONFIRM_RUNS: '4',
      LANA_VALUATION_MAX_AGE_SECONDS: '600',
    });
    expect(() => valuationEnvironment({ priceConfirmRuns: 1 })).toThrow(/context key "priceConfirmRuns"/);
  });
});

function sink() {
  let text = '';
  const stream = new Writable({
    write(chunk, _enc, cb) {
      text += chunk.toString();
      cb();
    },
  });
  return { stream, text: () => text };
}

async function cli(...argv: string[]) {
  const out = sink();
  const err = sink();
  const code = await runCli([...argv, '--database-url', t.url], { stdout: out.stream, stderr: err.stream });
  return { code, stdout: out.text(), stderr: err.text() };
}

describe('a price accepted by hand', () => {
  test('accept-price records who, when and why, and revalues at that price; the sources are then judged against it', async () => {
    await healthyFacility();
    const a = movablePrice(TRUE);
    const b = movablePrice(TRUE);
    const { services, drain } = domainHarness(t.db, { price: [a.source, b.source] });
    await services.portfolio.revalue(signal());
    // A real crash the sources report, but one of them is flaky: the operator accepts it by hand.
    const r = await cli(
      'accept-price',
      '--price',
      '45000.00',
      '--by',
      'ops-alice',
      '--reason',
      'exchange halt',
    );
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toMatch(/^accepted 45000.00 USD\/BTC by hand \(.+\); valuation job .+ enqueued\n$/);
    expect(
      await one(
        "SELECT btc_usd_cents, accepted_by, reason, accepted_at > now() - interval '1 minute' AS recent FROM manual_prices",
      ),
    ).toEqual({ btc_usd_cents: 4_500_000n, accepted_by: 'ops-alice', reason: 'exchange halt', recent: true });
    await drain();
    expect(
      await one(
        `SELECT v.btc_usd_cents, v.basis, v.manual_price_id = m.id AS linked
         FROM collateral_valuations v, manual_prices m ORDER BY v.valued_at DESC LIMIT 1`,
      ),
    ).toEqual({ btc_usd_cents: 4_500_000n, basis: 'manual', linked: true });
    expect(await one('SELECT collateralization_state FROM credit_facilities')).toEqual({
      collateralization_state: 'under-liquidation',
    });
    // The sources now agree on 46,000.00: within the guard of the new reference, accepted at once.
    a.set(4_600_000n);
    b.set(4_600_000n);
    expect(await services.portfolio.revalue(signal())).toMatchObject({
      btcUsdCents: 4_600_000n,
      basis: 'sources',
    });
    // The job applied it once: running it again changes nothing.
    const id = (await one<{ id: string }>('SELECT id FROM manual_prices')).id;
    expect(await services.portfolio.applyManualPrice(id, signal())).toBeNull();
    expect(await one('SELECT count(*)::int AS n FROM collateral_valuations')).toEqual({ n: 3 });
  });

  test('bad input exits 2 with one line and writes nothing', async () => {
    for (const [args, message] of [
      [['--by', 'alice', '--reason', 'x'], /--price is required/],
      [['--price', '97123.456', '--by', 'alice', '--reason', 'x'], /at most two decimals/],
      [['--price', '-5', '--by', 'alice', '--reason', 'x'], /at most two decimals/],
      [['--price', '0', '--by', 'alice', '--reason', 'x'], /must be above 0/],
      [['--price', '1e6', '--by', 'alice', '--reason', 'x'], /at most two decimals/],
      [['--price', '97123.45', '--reason', 'x'], /--by is required/],
      [['--price', '97123.45', '--by', 'alice'], /--reason is required/],
      [['--price', '97123.45', '--by', 'alice', '--reason', '   '], /--reason is required/],
    ] as const) {
      const r = await cli('accept-price', ...args);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    }
    expect(
      await one(
        'SELECT (SELECT count(*) FROM manual_prices)::int AS prices, (SELECT count(*) FROM jobs)::int AS jobs',
      ),
    ).toEqual({ prices: 0, jobs: 0 });
  });

  test('a price accepted by hand that waited past the valuation max age is not applied', async () => {
    const { drain, tracker } = domainHarness(t.db);
    await cli('accept-price', '--price', '97000', '--by', 'alice', '--reason', 'feeds down');
    await t.db.query("UPDATE manual_prices SET accepted_at = now() - interval '901 seconds'");
    await drain();
    const job = (await tracker.listJobs({ jobType: 'sync' }))[0]!;
    expect(job).toMatchObject({
      status: 'failed',
      lastError: expect.stringMatching(/older than the valuation's max age \(900 s\) and was not applied/),
    });
    expect(await one('SELECT count(*)::int AS n FROM collateral_valuations')).toEqual({ n: 0 });
  });
});

describe('through the RDS Data API', () => {
  test('observations, a confirmed move, a manual price, transition notices, withdrawal and expiry', async () => {
    const fixture = await startDataApiFixture(t.url);
    const db = dataApiDriverOver(fixture, t.name);
    try {
      const facility = await insertFacility(db, {
        principalCents: 7_000_000n,
        rate: '0.1',
        collateralSats: ONE_BTC,
      });
      const a = movablePrice(TRUE);
      const b = movablePrice(TRUE);
      const { services, tracker, drain, notifications } = domainHarness(db, { price: [a.source, b.source] });
      await services.portfolio.revalue(signal());
      a.set(7_500_000n);
      b.set(7_510_000n);
      await expect(services.portfolio.revalue(signal())).rejects.toThrow(/this is run 1/);
      await expect(services.portfolio.revalue(signal())).rejects.toThrow(/this is run 2/);
      expect(await services.portfolio.revalue(signal())).toMatchObject({
        btcUsdCents: 7_505_000n,
        basis: 'sustained-move',
        notices: 1,
      });
      await acceptPriceByHand(db, tracker, { btcUsd: '100000', acceptedBy: 'ops', reason: 'check' });
      await drain();
      expect(notifications.sent.map((m) => m.subject)).toEqual([
        expect.stringMatching(/^Margin call/),
        expect.stringMatching(/^Collateral restored/),
      ]);
      expect(
        await one(
          "SELECT count(*)::int AS n, count(*) FILTER (WHERE outcome = 'refused')::int AS refused FROM price_observations",
        ),
      ).toEqual({ n: 4, refused: 2 });
      await disbursalPolicy(db, ['ann']);
      const withdrawn = await createApprovalProcess(db, tracker, {
        facilityId: facility,
        amountCents: 100n,
        initiatedBy: 'olga',
      });
      await withdrawApprovalProcess(db, { processId: withdrawn, by: 'olga', reason: 'not needed' });
      const expiring = await createApprovalProcess(db, tracker, { facilityId: facility, amountCents: 200n });
      await db.query('UPDATE approval_processes SET expires_at = now() WHERE id = CAST(:id AS uuid)', {
        id: expiring,
      });
      expect(await services.approvals.expireOverdueProcesses(signal())).toEqual({ expired: 1 });
      expect(await one('SELECT reserved_cents FROM credit_facilities')).toEqual({ reserved_cents: 0n });
    } finally {
      await db.close();
      await fixture.close();
    }
  });
});
