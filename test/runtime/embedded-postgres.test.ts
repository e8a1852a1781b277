import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, test } from 'vitest';
import { type EmbeddedServer, startEmbeddedPostgres } from '../../shared/runtime/embedded-postgres.js';

/**
 * The embedded server shared by several users. Its own data folder (and a free port, chosen at start), so
 * it never meets the server of `npm start` or another engineer's tests.
 */
const root = path.resolve('.lana-jobs', `runtime-test-${randomBytes(4).toString('hex')}`);
const dataDir = path.join(root, 'pgdata');

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function answers(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { ...process.env, LANA_PGDATA: dataDir };
    delete env.DATABASE_URL;
    execFile('node', ['bin/lana-jobs.js', ...args], { env, timeout: 120_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

describe('the embedded PostgreSQL, shared', () => {
  test('six users starting at once get one server; it stops when the last one leaves', async () => {
    const users: EmbeddedServer[] = await Promise.all(
      Array.from({ length: 6 }, () => startEmbeddedPostgres({ dataDir })),
    );
    expect(new Set(users.map((u) => u.adminUrl)).size).toBe(1);
    const url = users[0]!.adminUrl;
    expect(await answers(url)).toBe(true);

    // A CLI command in another process attaches, and leaving does not stop the server under the others.
    const stats = await cli(['migrate']);
    expect(stats.code, stats.stderr).toBe(0);
    expect(await answers(url)).toBe(true);

    // The first user to start it stops first: the others keep their server.
    await users[0]!.stop();
    expect(await answers(url)).toBe(true);
    for (const u of users.slice(1, -1)) await u.stop();
    expect(await answers(url)).toBe(true);
    await users.at(-1)!.stop();
    expect(await answers(url)).toBe(false);
    expect(existsSync(path.join(dataDir, 'postmaster.pid'))).toBe(false);
  });

  test('a CLI command with no server running starts one and stops it when done', async () => {
    const r = await cli(['stats', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toHaveProperty('queue');
    expect(existsSync(path.join(dataDir, 'postmaster.pid'))).toBe(false);
  });

  test('a server that fails to start names the step and the log file to read', async () => {
    await appendFile(path.join(dataDir, 'postgresql.conf'), '\nshared_buffers = not-a-size\n');
    try {
      await expect(startEmbeddedPostgres({ dataDir })).rejects.toThrow(
        new RegExp(`pg_ctl start failed \\(exit 1\\).*; the server log is ${dataDir}/server\\.log$`),
      );
    } finally {
      await rm(`${dataDir}.lock`, { force: true });
    }
  });

  test("a folder with someone's files and no database is refused, untouched", async () => {
    const theirs = path.join(root, 'their-folder');
    await mkdir(theirs, { recursive: true });
    await writeFile(path.join(theirs, 'notes.txt'), 'mine');
    const before = await stat(theirs);
    await expect(startEmbeddedPostgres({ dataDir: theirs })).rejects.toThrow(
      /set-up refused: .*their-folder \(LANA_PGDATA\) is not empty and holds no PostgreSQL data; it was left as it was/,
    );
    const after = await stat(theirs);
    expect({ uid: after.uid, gid: after.gid, mode: after.mode }).toEqual({
      uid: before.uid,
      gid: before.gid,
      mode: before.mode,
    });
    expect(await readdir(theirs)).toEqual(['notes.txt']);
  });
});
