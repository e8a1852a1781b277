import http from 'node:http';
import { SESv2Client, SendEmailCommand } from '@aws-sdk/client-sesv2';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { createHttpPriceSource, createSesNotifier } from '../../shared/domain/index.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { domainHarness, fixedPrice, insertFacility } from './support.js';

let t: TestDatabase;
let server: http.Server;
let baseUrl: string;
/** What the local price server does next, per path. */
const behaviours: Record<string, (res: http.ServerResponse) => void> = {
  '/ok': (res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"price":"100000.00"}'),
  '/coingecko': (res) => res.writeHead(200).end('{"bitcoin":{"usd":98765.43}}'),
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
    'TRUNCATE jobs, job_executions, interest_accruals, notifications, disbursals, approval_votes, approval_processes, approval_policies, committee_members, committees, collateral_valuations, credit_facilities',
  );
});

const signal = () => new AbortController().signal;

const snapshot = async () =>
  (
    await t.db.query(
      `SELECT (SELECT count(*) FROM collateral_valuations)::int AS valuations,
              (SELECT count(*) FROM credit_facilities WHERE valued_at IS NOT NULL)::int AS valued,
              (SELECT count(*) FROM jobs WHERE job_type = 'notification')::int AS notifications`,
    )
  ).rows[0];

describe('price source', () => {
  test('reads a price exactly, in cents, from either accepted shape', async () => {
    expect(await createHttpPriceSource({ url: `${baseUrl}/ok` }).btcUsdCents()).toBe(10_000_000n);
    expect(await createHttpPriceSource({ url: `${baseUrl}/coingecko` }).btcUsdCents()).toBe(9_876_543n);
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

describe('portfolio valuation', () => {
  test('revalues collateral, sets the ratio, and enqueues one margin call per facility below the threshold', async () => {
    // At 100,000.00 USD/BTC: 1 BTC against 50,000.00 → ratio 2.0; 0.5 BTC against 50,000.00 → 1.0 (margin call)
    const healthy = await insertFacility(t.db, {
      principalCents: 5_000_000n,
      rate: '0.1',
      collateralSats: 100_000_000n,
    });
    const thin = await insertFacility(t.db, {
      principalCents: 5_000_000n,
      rate: '0.1',
      collateralSats: 50_000_000n,
    });
    await insertFacility(t.db, { principalCents: 0n, rate: '0.1', collateralSats: 10_000n });
    const { tracker, drain, notifications } = domainHarness(t.db, { price: fixedPrice(10_000_000n) });
    await tracker.enqueueMany([
      { type: 'sync', payload: {} },
      { type: 'sync', payload: {} }, // a second run the same day: no second margin call
    ]);
    await drain();
    const rows = (
      await t.db.query<{
        id: string;
        collateral_value_cents: bigint;
        collateral_to_loan_ratio: string | null;
      }>(
        'SELECT id, collateral_value_cents, collateral_to_loan_ratio FROM credit_facilities ORDER BY collateral_sats DESC',
      )
    ).rows;
    expect(rows).toEqual([
      { id: healthy, collateral_value_cents: 10_000_000n, collateral_to_loan_ratio: '2.0000' },
      { id: thin, collateral_value_cents: 5_000_000n, collateral_to_loan_ratio: '1.0000' },
      expect.objectContaining({ collateral_value_cents: 1_000n, collateral_to_loan_ratio: null }),
    ]);
    expect(notifications.sent).toHaveLength(1);
    expect(notifications.sent[0]!.subject).toMatch(/Margin call/);
    expect(notifications.sent[0]!.body).toContain(thin);
    expect((await snapshot())!.valuations).toBe(2);
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
    expect(result).toEqual({ btcUsdCents: 10_000_000n, facilitiesValued: 1202, marginCalls: 1201 });
    const today = (await t.db.query<{ d: string }>("SELECT CAST(now() AT TIME ZONE 'UTC' AS date) AS d"))
      .rows[0]!.d;
    const jobs = await t.db.query<{ n: number; facilities: number; dated_today: number; keyed: number }>(
      `SELECT count(*)::int AS n, count(DISTINCT payload->>'facilityId')::int AS facilities,
              count(*) FILTER (WHERE payload->>'valuationDate' = :today)::int AS dated_today,
              count(*) FILTER (WHERE idempotency_key = 'margin-call:' || (payload->>'facilityId') || ':' || :today)::int AS keyed
       FROM jobs WHERE job_type = 'notification' AND payload->>'kind' = 'margin-call'`,
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
    // A second valuation the same day enqueues no second margin call.
    expect(await services.portfolio.revalue(signal())).toMatchObject({ marginCalls: 1201 });
    expect(await snapshot()).toEqual({ valuations: 2, valued: 1202, notifications: 1201 });
  });

  test('collateral value rounds half up to the cent, exactly', async () => {
    // At 12,345.50 USD/BTC: 1 sat = 0.0123455 cents → 0; 500,000 sats = 6,172.75 cents → 6,173 (half up).
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
      { id: halfSats, collateral_value_cents: 6_173n },
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
