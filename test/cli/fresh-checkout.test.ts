import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * The CLI as the README tells a new user to run it: `npx lana-jobs <command>` in a fresh checkout right
 * after `npm install`, as a process through a shell, never by calling the CLI's function.
 *
 * The checkout is what a clone holds (the files git tracks, plus new files not yet committed, so this
 * tests the working tree); its node_modules is a hard-linked copy of this one, which holds exactly what
 * `npm install` put there (npm never links a project's own bin: `npx` has to find it by itself).
 */
let checkout: string;
let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase();
  checkout = await mkdtemp(path.join(tmpdir(), 'lana-jobs-checkout-'));
  const files = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', '-z'], {
    encoding: 'utf8',
  })
    .split('\0')
    .filter((f) => f !== '' && existsSync(f));
  for (const f of files) await cp(f, path.join(checkout, f), { preserveTimestamps: true });
  execFileSync('cp', ['-al', 'node_modules', path.join(checkout, 'node_modules')]);
});

afterAll(async () => {
  await rm(checkout, { recursive: true, force: true });
  await t.drop();
});

/** Runs a command line through `sh`, as a user types it, in the fresh checkout. */
function shell(
  command: string,
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      'sh',
      ['-c', command],
      {
        cwd: checkout,
        // npx keeps what it links in its cache: a cache inside the checkout goes away with it.
        env: {
          ...process.env,
          DATABASE_URL: t.url,
          npm_config_cache: path.join(checkout, '.npm-cache'),
          ...env,
        },
        timeout: 60_000,
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe('a fresh checkout, right after npm install', () => {
  test('`npx lana-jobs <command>` reaches the CLI, not a shell built-in', async () => {
    const types = await shell('npx lana-jobs types');
    expect(types.stderr).toBe('');
    expect(types.code).toBe(0);
    expect(types.stdout).toMatch(/interest-accrual\s+6\s+2m, 4m, 8m, 16m, 32m/);

    const migrated = await shell('npx lana-jobs migrate');
    expect(migrated).toMatchObject({ code: 0, stdout: 'migrations: up to date\n' });

    const enqueued = await shell(`npx lana-jobs enqueue sync --in 1h --priority -5 --json`);
    expect(enqueued.code, enqueued.stderr).toBe(0);
    const { job } = JSON.parse(enqueued.stdout) as { job: { id: string; priority: number } };
    expect(job.priority).toBe(-5);
    const shown = await shell(`npx lana-jobs show ${job.id}`);
    expect(shown.stdout).toContain(job.id);
    expect((await shell(`npx lana-jobs cancel ${job.id}`)).code).toBe(0);
  });

  test('`npx lana-jobs` alone prints the usage and exits 2; `npm run jobs --` works too', async () => {
    const bare = await shell('npx lana-jobs');
    expect(bare.code).toBe(2);
    expect(bare.stdout).toMatch(/^Usage: lana-jobs <command>/);
    const viaScript = await shell('npm run --silent jobs -- stats');
    expect(viaScript.code, viaScript.stderr).toBe(0);
    expect(viaScript.stdout).toMatch(/queue depth|QUEUE|depth/i);
  });

  test('bytes that are not UTF-8 in --key are refused, exit 2, nothing written', async () => {
    const before = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs');
    const r = await shell(`npx lana-jobs enqueue sync --in 1h --key "$(printf 'key-\\377')"`);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      'lana-jobs enqueue: idempotency key is not valid UTF-8 text (it holds U+FFFD or a lone surrogate)\n',
    );
    const after = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs');
    expect(after.rows[0]!.n).toBe(before.rows[0]!.n);
  });

  test('a connection string that is wrong names the setting; a server that is not there, the host', async () => {
    const notUrl = await shell('npx lana-jobs stats', { DATABASE_URL: 'notaurl' });
    expect(notUrl.code).toBe(2);
    expect(notUrl.stderr).toBe(
      'lana-jobs stats: DATABASE_URL is not a PostgreSQL URL (expected postgres://user:password@host:5432/database)\n',
    );
    const noServer = await shell('npx lana-jobs stats', {
      DATABASE_URL: 'postgres://postgres@127.0.0.1:9/postgres',
    });
    expect(noServer.code).toBe(1);
    expect(noServer.stderr).toMatch(
      /^lana-jobs stats: cannot connect to PostgreSQL at 127\.0\.0\.1:9 \(from DATABASE_URL\): connect ECONNREFUSED/,
    );
  });
});
