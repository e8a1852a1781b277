import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
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
  // The checkout's own outbox (the developer's `npm start` e-mails) is left alone: the test has its own.
  const checkoutOutbox = path.resolve('.lana-jobs/outbox.jsonl');
  const checkoutBefore = existsSync(checkoutOutbox) ? statSync(checkoutOutbox).size : -1;
  const outboxDir = mkdtempSync(path.join(tmpdir(), 'lana-demo-outbox-'));
  const outboxFile = path.join(outboxDir, 'outbox.jsonl');
  const opened = await openLocalDatabase({ databaseUrl: t.url });
  try {
    const code = await runWorkerCommand({
      opened,
      io: { stdout: stderr, stderr },
      json: false,
      demo: true,
      stopSignal: stop.signal,
      outboxFile,
    });
    expect(code).toBe(0);
    expect(readFileSync(outboxFile, 'utf8')).toContain('"to"');
    expect(existsSync(checkoutOutbox) ? statSync(checkoutOutbox).size : -1).toBe(checkoutBefore);
  } finally {
    await opened.close();
    rmSync(outboxDir, { recursive: true, force: true });
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

test('with the console port taken (a second npm start), the console starts on a free port', async () => {
  const busy = net.createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  const busyPort = (busy.address() as net.AddressInfo).port;
  let log = '';
  const stop = new AbortController();
  const stderr = new Writable({
    write(chunk, _enc, cb) {
      log += chunk.toString();
      if (/console: http:/.test(log) || log.includes('console not started')) stop.abort();
      cb();
    },
  });
  const opened = await openLocalDatabase({ databaseUrl: t.url });
  try {
    const code = await runWorkerCommand({
      opened,
      io: { stdout: stderr, stderr },
      json: false,
      demo: false,
      console: { port: busyPort },
      stopSignal: stop.signal,
    });
    expect(code).toBe(0);
  } finally {
    await opened.close();
    busy.close();
  }
  expect(log).toContain(`port ${busyPort} is in use (another npm start?): the console takes a free port`);
  const url = /console: (http:\/\/127\.0\.0\.1:(\d+)\/)/.exec(log);
  expect(url).not.toBeNull();
  expect(Number(url![2])).not.toBe(busyPort);
});
