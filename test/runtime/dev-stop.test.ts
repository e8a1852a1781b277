import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, expect, test } from 'vitest';

/**
 * `npm start` (`lana-jobs dev`) on the embedded server, from a fresh data folder, as its last user: Ctrl-C
 * says it stops the server and does not wait on a shutdown checkpoint of the demo's writes. It runs in a
 * folder of its own, so its outbox and data stay out of the checkout.
 */
const BIN = path.resolve('bin/lana-jobs.js');
let dir: string;

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('Ctrl-C of npm start as the last user stops the embedded server at once, saying so', async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'lana-dev-stop-'));
  // As root, the server runs as the postgres user, who must reach the data folder inside.
  await chmod(dir, 0o755);
  const env: NodeJS.ProcessEnv = { ...process.env, LANA_PGDATA: path.join(dir, 'pgdata') };
  delete env.DATABASE_URL;
  const child = spawn('node', [BIN, 'dev'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => {
    log += String(d);
  });
  child.stderr.on('data', (d) => {
    log += String(d);
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setInterval(() => {
        if (log.includes('Ctrl-C to stop')) {
          clearInterval(timer);
          resolve();
        }
      }, 50);
      void exited.then(() => reject(new Error(`dev exited early:\n${log}`)));
      setTimeout(() => reject(new Error(`no demo round within 90 s:\n${log}`)), 90_000);
    });
    // The demo's pages are flushed right after its round, while the user reads the narration.
    await new Promise((r) => setTimeout(r, 4000));
  } finally {
    child.kill('SIGINT');
  }
  expect(await exited).toBe(0);
  expect(log).toContain('last user of the embedded PostgreSQL: stopping it');
  // The shutdown checkpoint had little left to write (a fresh database's demo leaves ~1000 pages).
  const serverLog = await readFile(path.join(dir, 'pgdata', 'server.log'), 'utf8');
  const shutdown = serverLog.split('checkpoint starting: shutdown').at(-1)!;
  const buffers = Number(/checkpoint complete: wrote (\d+) buffers/.exec(shutdown)![1]);
  expect(buffers).toBeLessThan(200);
  // The demo's e-mails went to the outbox of the folder it ran in.
  expect(await readFile(path.join(dir, '.lana-jobs', 'outbox.jsonl'), 'utf8')).toContain('"to"');
}, 150_000);
