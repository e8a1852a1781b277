import pg from 'pg';
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
  wakeWorkers?: () => Promise<void>;
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
  const url = options.databaseUrl ?? process.env.DATABASE_URL;
  if (url) {
    const db = new PgDatabase({
      connectionString: url,
      max: options.poolSize,
      applicationName: options.applicationName,
    });
    return { db, pg: db, description: redact(url), close: () => db.close() };
  }
  options.logger?.info('no DATABASE_URL: using the embedded PostgreSQL (.lana-jobs/pgdata)');
  const server = await startEmbeddedPostgres();
  await ensureDatabase(server.adminUrl, EMBEDDED_DATABASE_NAME);
  const db = new PgDatabase({
    connectionString: server.urlFor(EMBEDDED_DATABASE_NAME),
    max: options.poolSize,
    applicationName: options.applicationName,
  });
  return {
    db,
    pg: db,
    description: `embedded PostgreSQL ${redact(server.urlFor(EMBEDDED_DATABASE_NAME))}`,
    async close() {
      await db.close();
      await server.stop();
    },
  };
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
