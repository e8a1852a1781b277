import { Writable } from 'node:stream';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { runCli } from '../../shared/cli/main.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

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

const FACILITY = '0b7c8a52-57a4-4d51-a0a4-1c1f3f0c9d11';

test('retry --payload replays with a new payload; show lists the change; bad input exits 2, nothing written', async () => {
  const payload = { kind: 'payment-reminder', facilityId: FACILITY, dueDate: '2026-12-01' };
  const enq = await jobs('enqueue', 'notification', '--payload', JSON.stringify(payload), '--json');
  const id = (JSON.parse(enq.stdout) as { job: { id: string } }).job.id;
  expect((await jobs('cancel', id)).code).toBe(0);

  const fixed = { ...payload, dueDate: '2026-12-02' };
  for (const argv of [
    ['retry', id, '--payload', JSON.stringify({ ...payload, dueDate: 'tomorrow' }), '--by', 'bob'],
    ['retry', id, '--payload', '{not json', '--by', 'bob'],
    ['retry', id, '--by', 'bob'],
  ]) {
    const r = await jobs(...argv);
    expect(r.code, argv.join(' ')).toBe(2);
    expect(r.stderr.trim().split('\n'), argv.join(' ')).toHaveLength(1);
  }
  const unchanged = await jobs('show', id, '--json');
  expect(JSON.parse(unchanged.stdout)).toMatchObject({
    job: { status: 'cancelled', payload },
    payloadChanges: [],
  });

  const r = await jobs('retry', id, '--payload', JSON.stringify(fixed), '--by', 'bob');
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/is pending again with the new payload/);
  const shown = await jobs('show', id);
  expect(shown.stdout).toMatch(/payload changed by replays:/);
  expect(shown.stdout).toMatch(
    /bob\s+\{"kind":"payment-reminder","dueDate":"2026-12-01",[^}]*\}\s+\{[^}]*"dueDate":"2026-12-02"/,
  );
  const json = JSON.parse((await jobs('show', id, '--json')).stdout) as {
    job: { status: string; payload: unknown };
    payloadChanges: { changedBy: string; previousPayload: unknown }[];
  };
  expect(json.job).toMatchObject({ status: 'pending', payload: fixed });
  expect(json.payloadChanges).toMatchObject([{ changedBy: 'bob', previousPayload: payload }]);
});
