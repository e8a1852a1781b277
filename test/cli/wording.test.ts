import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { runCli } from '../../shared/cli/main.js';
import { runWorkerCommand } from '../../shared/cli/work.js';
import { openLocalDatabase } from '../../shared/runtime/database.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/** What the CLI says, to a person and to a script: help, errors, `show`, `stats`, the worker's log. */

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());

const savedEnv = { ...process.env };
afterEach(() => {
  for (const k of Object.keys(process.env)) if (!(k in savedEnv)) delete process.env[k];
  Object.assign(process.env, savedEnv);
});

function sink() {
  let text = '';
  const stream = new Writable({
    write(chunk, _enc, done) {
      text += String(chunk);
      done();
    },
  });
  return { stream, text: () => text };
}

async function run(argv: string[], withDatabase = true) {
  const out = sink();
  const err = sink();
  const code = await runCli(withDatabase ? [...argv, '--database-url', t.url] : argv, {
    stdout: out.stream,
    stderr: err.stream,
  });
  return { code, stdout: out.text(), stderr: err.text() };
}

async function jobCount(): Promise<number> {
  const r = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs');
  return r.rows[0]!.n;
}

describe('the CLI says what it means', () => {
  test('enqueue --help gives the priority direction the claim uses: lower runs first', async () => {
    const r = await run(['enqueue', '--help'], false);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/--priority N\s+-1000 to 1000; lower runs first/);
    expect(r.stdout).not.toContain('higher first');
    expect(r.stdout).toMatch(/--max-attempts N\s+1 to 100/);
  });

  test('with --json, an error is one JSON object on stderr', async () => {
    const r = await run(['enqueue', 'sync', '--priority', 'soon', '--json']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(JSON.parse(r.stderr)).toEqual({
      error: {
        command: 'enqueue',
        code: 'invalid_option',
        message: 'priority must be an integer from -1000 to 1000, lower runs first (got "soon")',
        exitCode: 2,
      },
    });
    const usage = await run(['list', '--status', 'done', '--json']);
    expect(JSON.parse(usage.stderr).error).toMatchObject({ code: 'usage', exitCode: 2 });
  });

  test('show: a retrying job has no "lease expires"; a failed one says when it failed', async () => {
    const enq = await run(['enqueue', 'sync', '--json']);
    const { job } = JSON.parse(enq.stdout) as { job: { id: string } };
    await t.db.query(
      `UPDATE jobs SET status = 'retrying', attempts = 1, lease_expires_at = now() - interval '1 minute',
         last_error = 'feed down' WHERE id = CAST(:id AS uuid)`,
      { id: job.id },
    );
    const retrying = await run(['show', job.id]);
    expect(retrying.stdout).not.toContain('lease expires');
    await t.db.query(
      `UPDATE jobs SET status = 'failed', completed_at = now(), lease_expires_at = NULL WHERE id = CAST(:id AS uuid)`,
      { id: job.id },
    );
    const failed = await run(['show', job.id]);
    expect(failed.stdout).toMatch(/^failed at {6}\d{4}-/m);
    expect(failed.stdout).not.toContain('completed at');
  });

  test('stats: the last hour counts attempts, and says so', async () => {
    const r = await run(['stats']);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(/^last hour:$/m);
    expect(r.stdout).toContain('attempts finished in the last hour:');
  });
});

describe('settings a caller got wrong exit 2 with one line, as DATABASE_URL does', () => {
  test('--database-url with an empty value is refused, not read as "use the embedded server"', async () => {
    const before = await jobCount();
    const r = await run(['enqueue', 'sync', '--database-url', ''], false);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      'lana-jobs enqueue: --database-url is empty: give a PostgreSQL URL (postgres://user:password@host:5432/database), or leave the option out to use DATABASE_URL or the embedded server\n',
    );
    expect(await jobCount()).toBe(before);
  });

  test.each([
    '/proc/nope',
    '/proc/nope/pgdata',
  ])('LANA_PGDATA=%s, a folder that cannot be made: a clear message, exit 2', async (dataDir) => {
    delete process.env.DATABASE_URL;
    process.env.LANA_PGDATA = dataDir;
    const r = await run(['stats'], false);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      `lana-jobs stats: LANA_PGDATA=${dataDir} cannot be used: the folder ${dataDir} cannot be created (ENOENT); give a folder you can write, or set DATABASE_URL\n`,
    );
  });

  test('a LANA_* setting the runtime refuses: exit 2 before anything starts', async () => {
    process.env.LANA_PRICE_MAX_JUMP = 'a lot';
    const r = await run(['work']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^lana-jobs work: invalid settings: .*LANA_PRICE_MAX_JUMP/);
  });
});

test('a job that fails for good is one line in the worker log', async () => {
  const enq = await run([
    'enqueue',
    'approval-processing',
    '--payload',
    '{"processId":"00000000-0000-4000-8000-000000000000"}',
    '--json',
  ]);
  const id = (JSON.parse(enq.stdout) as { job: { id: string } }).job.id;
  let log = '';
  const stop = new AbortController();
  const stderr = new Writable({
    write(chunk, _enc, cb) {
      log += String(chunk);
      if (log.includes(id) && /failed/.test(log.split('\n').find((l) => l.includes(id)) ?? '')) {
        setTimeout(() => stop.abort(), 300);
      }
      cb();
    },
  });
  const opened = await openLocalDatabase({ databaseUrl: t.url });
  try {
    await runWorkerCommand({
      opened,
      io: { stdout: stderr, stderr },
      json: false,
      demo: false,
      stopSignal: stop.signal,
    });
  } finally {
    await opened.close();
  }
  const lines = log.split('\n').filter((l) => l.includes(id));
  expect(lines, log).toHaveLength(1);
  expect(lines[0]).toMatch(/job failed for good/);
});
