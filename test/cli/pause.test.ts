import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
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

async function pauses(): Promise<number> {
  const r = await t.db.query<{ n: number }>('SELECT count(*)::integer AS n FROM job_type_pauses');
  return r.rows[0]!.n;
}

describe('lana-jobs pause and resume', () => {
  test('an unknown type or a bad option exits 2 with one line, nothing written', async () => {
    for (const argv of [
      ['pause', 'no-such-type'],
      ['resume', 'no-such-type'],
      ['pause', 'notification', '--by', ''],
      ['pause', 'notification', '--reason', 'x'.repeat(1001)],
      ['pause'],
    ]) {
      const r = await jobs(...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), argv.join(' ')).toHaveLength(1);
      expect(r.stdout).toBe('');
    }
    expect(await pauses()).toBe(0);
  });

  test('pause shows in types and stats with who and why; resume ends it', async () => {
    const paused = await jobs('pause', 'notification', '--reason', 'SES quota reached', '--by', 'alice');
    expect(paused.code).toBe(0);
    expect(paused.stdout).toMatch(/^paused notification \(by alice: SES quota reached\)/);

    const again = await jobs('pause', 'notification', '--reason', 'other', '--by', 'bob', '--json');
    expect(JSON.parse(again.stdout)).toMatchObject({
      created: false,
      pause: { jobType: 'notification', pausedBy: 'alice', reason: 'SES quota reached' },
    });

    const types = await jobs('types');
    expect(types.stdout).toMatch(/^notification\s+alice\s+\S+\s+SES quota reached$/m);
    const typesJson = JSON.parse((await jobs('types', '--json')).stdout) as {
      type: string;
      paused: { pausedBy: string; reason: string } | null;
    }[];
    expect(typesJson.find((x) => x.type === 'notification')!.paused).toMatchObject({
      pausedBy: 'alice',
      reason: 'SES quota reached',
    });
    expect(typesJson.find((x) => x.type === 'sync')!.paused).toBeNull();

    const stats = await jobs('stats');
    expect(stats.stdout).toMatch(/paused \(none of their due jobs is claimed until resumed\)/);
    expect(stats.stdout).toMatch(/^notification\s+alice\s+\S+\s+SES quota reached$/m);

    const resumed = await jobs('resume', 'notification');
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toMatch(/^resumed notification \(paused by alice since /);
    expect(await pauses()).toBe(0);
    expect((await jobs('resume', 'notification')).stdout).toMatch(/was not paused; nothing written/);
    expect((await jobs('stats')).stdout).not.toMatch(/paused \(/);
  });
});
