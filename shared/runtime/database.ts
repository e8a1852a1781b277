import { existsSync } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import type { FetchReadyWaker } from '../aws/waker.js';
import { PgDatabase } from '../db/pg-driver.js';
import type { Database } from '../db/port.js';
import { startEmbeddedPostgres } from './embedded-postgres.js';
import type { Logger } from './logger.js';

/** The database the embedded server holds the job tables in. */
export const EMBEDDED_DATABASE_NAME = 'lana_jobs';

export interface OpenedDatabase {
  db: Database;
  /** Present for node-postgres connections (LISTEN/NOTIFY is pg-only). */
  pg?: PgDatabase;
  /** Where it points, without a password, for logs. */
  description: string;
  /**
   * Wakes the workers after a write that made jobs due now. On AWS (with JOBS_BUS_NAME set) a
   * `jobs.enqueued` nudge, so fetch-ready runs at once instead of at its next minute; locally unneeded (the
   * insert trigger's NOTIFY wakes workers).
   */
  waker?: FetchReadyWaker;
  /** The embedded server (this process may be the one to stop it on close). */
  embedded?: boolean;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** A PostgreSQL connection string; default DATABASE_URL, else the embedded server. */
  databaseUrl?: string;
  poolSize?: number;
  logger?: Logger;
  applicationName?: string;
}

/**
 * Connects the local runtime and the CLI: to `--database-url` / DATABASE_URL when given, else to the
 * embedded PostgreSQL (started on first use, data kept in `.lana-jobs/pgdata`).
 */
export async function openLocalDatabase(options: OpenDatabaseOptions = {}): Promise<OpenedDatabase> {
  const setting = options.databaseUrl ? '--database-url' : 'DATABASE_URL';
  const url = options.databaseUrl ?? process.env.DATABASE_URL;
  if (url) {
    const target = connectionTarget(url, setting);
    const db = new PgDatabase({
      connectionString: url,
      max: options.poolSize,
      applicationName: options.applicationName,
    });
    await probe(db, `PostgreSQL at ${target} (from ${setting})`);
    return { db, pg: db, description: redact(url), close: () => db.close() };
  }
  const dataDir = process.env.LANA_PGDATA ?? '.lana-jobs/pgdata';
  await assertUsableDataDir(dataDir, process.env.LANA_PGDATA !== undefined);
  options.logger?.info(`no DATABASE_URL: using the embedded PostgreSQL (${dataDir})`);
  const server = await startEmbeddedPostgres({ dataDir });
  const what = `the embedded PostgreSQL at ${connectionTarget(server.adminUrl, 'it')} (log: ${server.logFile})`;
  try {
    await ensureDatabase(server.adminUrl, EMBEDDED_DATABASE_NAME);
  } catch (err) {
    await server.stop().catch(() => {});
    throw new Error(`cannot connect to ${what}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const db = new PgDatabase({
    connectionString: server.urlFor(EMBEDDED_DATABASE_NAME),
    max: options.poolSize,
    applicationName: options.applicationName,
  });
  return {
    db,
    pg: db,
    description: `embedded PostgreSQL ${redact(server.urlFor(EMBEDDED_DATABASE_NAME))}`,
    embedded: true,
    async close() {
      await db.close();
      await server.stop({
        onStopping: () => options.logger?.info('last user of the embedded PostgreSQL: stopping it'),
      });
    },
  };
}

/**
 * The embedded server's data folder must be one this process can make (or has): a path it cannot create
 * (`/proc/nope`) is the setting's fault, said as such, not a raw ENOENT later. Each missing level is made
 * on its own: a recursive mkdir never returns on some paths under /proc.
 */
async function assertUsableDataDir(dataDir: string, fromSetting: boolean): Promise<void> {
  const target = path.resolve(dataDir);
  const missing: string[] = [];
  let dir = target;
  while (!existsSync(dir) && path.dirname(dir) !== dir) {
    missing.unshift(dir);
    dir = path.dirname(dir);
  }
  try {
    if (!(await stat(dir)).isDirectory()) throw Object.assign(new Error(), { code: 'ENOTDIR' });
    for (const level of missing) await mkdir(level);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    const what = fromSetting ? `LANA_PGDATA=${dataDir}` : `the data folder ${dataDir}`;
    throw new DatabaseSettingError(
      `${what} cannot be used: the folder ${target} cannot be created (${code}); give a folder you can write, or set DATABASE_URL`,
    );
  }
}

/** A connection string that is not a PostgreSQL URL: the setting is wrong, not the server. */
export class DatabaseSettingError extends Error {
  override readonly name = 'DatabaseSettingError';
}

/** `host:port` of a PostgreSQL URL; anything else is refused naming the setting it came from. */
function connectionTarget(url: string, setting: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new DatabaseSettingError(
      `${setting} is not a PostgreSQL URL (expected postgres://user:password@host:5432/database)`,
    );
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new DatabaseSettingError(
      `${setting} is a ${parsed.protocol.replace(/:$/, '')} URL; expected postgres://user:password@host:5432/database`,
    );
  }
  return `${parsed.hostname || 'localhost'}:${parsed.port || '5432'}`;
}

/** Connects once, so a failure says which server, from which setting, instead of a bare `ENOTFOUND`. */
async function probe(db: PgDatabase, what: string): Promise<void> {
  try {
    await db.query('SELECT 1');
  } catch (err) {
    await db.close().catch(() => {});
    const reason = err instanceof Error && err.message ? err.message : String(err);
    throw new Error(`cannot connect to ${what}: ${reason}`);
  }
}

async function ensureDatabase(adminUrl: string, name: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (exists.rowCount === 0) {
      await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`).catch((err: { code?: string }) => {
        if (err.code !== '42P04') throw err; // created meanwhile by another process
      });
    }
  } finally {
    await client.end();
  }
}

export function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable connection string)';
  }
}
