import { Writable } from 'node:stream';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { runCli } from '../../shared/cli/main.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/** `lana-jobs enqueue --debounce KEY --window D [--max-wait D]`: the tracker's debounce from the command line. */
let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());

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

async function jobs(...argv: string[]) {
  const out = sink();
  const err = sink();
  const code = await runCli([...argv, '--database-url', t.url], { stdout: out.stream, stderr: err.stream });
  return { code, stdout: out.text(), stderr: err.text() };
}

async function stored() {
  return (
    await t.db.query<{ payload: string; in_window: boolean }>(
      `SELECT payload::text AS payload,
              scheduled_at BETWEEN now() + interval '50 seconds' AND now() + interval '61 seconds' AS in_window
       FROM jobs WHERE job_type = 'sync'`,
    )
  ).rows;
}

test('a burst from the command line is one job with the last payload, due a window later', async () => {
  const first = await jobs('enqueue', 'sync', '--debounce', 'revalue', '--window', '1m');
  expect(first.code).toBe(0);
  expect(first.stdout).toMatch(/^enqueued sync /);
  const second = await jobs(
    'enqueue',
    'sync',
    '--payload',
    '{"target":"portfolio-valuation"}',
    '--debounce',
    'revalue',
    '--window',
    '1m',
    '--max-wait',
    '10m',
  );
  expect(second.code).toBe(0);
  expect(second.stdout).toMatch(/^joined the pending sync .* with this debounce key: new payload, due /);
  expect(await stored()).toEqual([{ payload: '{"target": "portfolio-valuation"}', in_window: true }]);
});

test('bad debounce options exit 2 with one line, nothing written', async () => {
  const before = await stored();
  for (const argv of [
    ['enqueue', 'sync', '--debounce', 'k'],
    ['enqueue', 'sync', '--window', '30s'],
    ['enqueue', 'sync', '--debounce', 'k', '--window', '0s'],
    ['enqueue', 'sync', '--debounce', 'k', '--window', '2d'],
    ['enqueue', 'sync', '--debounce', 'k', '--window', '1500ms'],
    ['enqueue', 'sync', '--debounce', '', '--window', '30s'],
    ['enqueue', 'sync', '--debounce', 'k', '--window', '1m', '--max-wait', '30s'],
    ['enqueue', 'sync', '--debounce', 'k', '--window', '1m', '--key', 'other'],
    ['enqueue', 'sync', '--debounce', 'k', '--window', '1m', '--in', '5m'],
  ]) {
    const r = await jobs(...argv);
    expect(r.code, argv.join(' ')).toBe(2);
    expect(r.stderr.trim().split('\n'), argv.join(' ')).toHaveLength(1);
    expect(r.stdout, argv.join(' ')).toBe('');
  }
  expect(await stored()).toEqual(before);
});
