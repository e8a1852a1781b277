import http from 'node:http';

/**
 * A stand-in BTC/USD price feed on 127.0.0.1 for machines without a configured one (LANA_PRICE_URL):
 * a real HTTP server answering `{ "price": "…", "at": "<now>" }`, drifting a little per request. `failFirst` answers
 * HTTP 503 to the first requests, so the demo shows a retryable failure and its retry schedule.
 */
/**
 * The simulated market several demo feeds quote: one price drifting a little per read, so the feeds
 * agree as real exchanges do (each adds its own small spread), rather than wandering apart.
 */
export function createDemoMarket(): () => number {
  let cents = 9_725_000;
  return () => {
    cents += Math.round((Math.random() - 0.5) * 20_000);
    return cents;
  };
}

export async function startDemoPriceFeed(
  options: { failFirst?: number; market?: () => number } = {},
): Promise<{ url: string; close(): Promise<void> }> {
  let requests = 0;
  const market = options.market ?? createDemoMarket();
  const server = http.createServer((_req, res) => {
    requests++;
    if (requests <= (options.failFirst ?? 0)) {
      res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"feed warming up"}');
      return;
    }
    // Within 0.05 % of the market: well inside the valuation's agreement tolerance.
    const cents = market() + Math.round((Math.random() - 0.5) * 9_000);
    const price = `${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, '0')}`;
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ price, at: new Date().toISOString() }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}/btc-usd`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
