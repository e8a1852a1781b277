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
    'TRUNCATE jobs, job_executions, interest_accruals, notifications, disbursals, approval_votes, approval_processes, collateral_valuations, credit_facilities',
  );
});

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
