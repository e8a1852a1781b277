import { Writable } from 'node:stream';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { runWorkerCommand } from '../../shared/cli/work.js';
import { openLocalDatabase } from '../../shared/runtime/database.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase({ migrate: false });
});
afterAll(async () => t.drop());

test('the demo explains the catch-up tick, the retry rule and the failure before it happens', async () => {
  let log = '';
  const stop = new AbortController();
  const stderr = new Writable({
    write(chunk, _enc, cb) {
      log += chunk.toString();
      if (log.includes('the worker keeps running')) stop.abort();
      cb();
    },
  });
  const opened = await openLocalDatabase({ databaseUrl: t.url });
  try {
    const code = await runWorkerCommand({
      opened,
      io: { stdout: stderr, stderr },
      json: false,
      demo: true,
      stopSignal: stop.signal,
    });
    expect(code).toBe(0);
  } finally {
    await opened.close();
  }
  const lines = log.split('\n');
  const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
  // A fresh database: the last midnight's accrual tick never ran, so the worker fired it, and says why.
  expect(log).toMatch(
    /demo: the worker just fired the missed interest-accrual-daily tick of \d{4}-\d{2}-\d{2}T00:00:00\.000Z \(catch-up/,
  );
  expect(log).toMatch(
    /retry rule: after failed attempt n, the next try is 2\^n minutes later, capped at 32 delays=2m, 4m, 8m, 16m, 32m types=approval-processing, interest-accrual, notification/,
  );
  const narrated = at(/demo: the first portfolio valuation \(sync\) will get a 503 from the price feed/);
  const failed = at(/attempt failed; will retry type=sync/);
  expect(narrated).toBeGreaterThanOrEqual(0);
  expect(failed).toBeGreaterThan(narrated);
  expect(lines[narrated]).toMatch(/syncRetryDelays=1m, 2m, 4m$/);
  expect(log).toMatch(/info {2}job completed type=interest-accrual/);
});
