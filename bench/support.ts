import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import pg from 'pg';
import { migrate } from '../shared/db/migrate.js';
import { PgDatabase } from '../shared/db/pg-driver.js';
import { type EmbeddedServer, startEmbeddedPostgres } from '../shared/runtime/embedded-postgres.js';

/** The server the benchmark runs on: DATABASE_URL, else an embedded PostgreSQL started for the run. */
export interface BenchServer {
  adminUrl: string;
  description: string;
  /** A fresh, migrated database for one workload. */
  freshDatabase(
    poolSize?: number,
    options?: { migrate?: boolean },
  ): Promise<{ db: PgDatabase; url: string; drop(): Promise<void> }>;
  stop(): Promise<void>;
}

export async function openBenchServer(): Promise<BenchServer> {
  let embedded: EmbeddedServer | undefined;
  let adminUrl = process.env.DATABASE_URL;
  if (!adminUrl) {
    embedded = await startEmbeddedPostgres({ dataDir: '.lana-jobs/bench-pgdata' });
    adminUrl = embedded.adminUrl;
  }
  const admin = adminUrl;
  const version = await withClient(
    admin,
    async (c) => (await c.query('SHOW server_version')).rows[0].server_version,
  );
  return {
    adminUrl: admin,
    description: `${embedded ? 'embedded ' : ''}PostgreSQL ${version}`,
    async freshDatabase(poolSize = 10, options = {}) {
      const name = `lana_bench_${randomBytes(4).toString('hex')}`;
      await withClient(admin, (c) => c.query(`CREATE DATABASE ${name}`));
      const url = new URL(admin);
      url.pathname = `/${name}`;
      const db = new PgDatabase({
        connectionString: url.toString(),
        max: poolSize,
        applicationName: 'lana-bench',
      });
      if (options.migrate !== false) await migrate(db);
      return {
        db,
        url: url.toString(),
        async drop() {
          await db.close();
          await withClient(admin, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
        },
      };
    },
    async stop() {
      await embedded?.stop();
    },
  };
}

async function withClient<T>(url: string, work: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await work(c);
  } finally {
    await c.end();
  }
}

/**
 * Before a latency workload: flush what earlier workloads left dirty (W1 writes some 20 MB of WAL), so
 * that checkpoint's writes do not land in the middle of the measurement, for ours and the peer's alike.
 * CHECKPOINT needs a superuser (or pg_checkpoint); without one the workload just starts.
 */
export async function settle(url: string): Promise<void> {
  await withClient(url, (c) => c.query('CHECKPOINT')).catch(() => {});
  await sleep(500);
}

/** The middle value (the upper one of an even count): medians of alternating rounds compare two setups. */
export function median(xs: readonly number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

/** p50, p99 and max of a set of latencies in milliseconds (the W2 shape, shared with its floor and peer). */
export function latencySummary(latencies: number[]): {
  jobs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
} {
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    jobs: sorted.length,
    p50Ms: +percentile(sorted, 50).toFixed(2),
    p99Ms: +percentile(sorted, 99).toFixed(2),
    maxMs: +(sorted[sorted.length - 1] ?? Number.NaN).toFixed(2),
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * CPU time used so far by every `postgres` process on this machine (live ones, plus exited backends
 * through their parent's children counters), in milliseconds; null when /proc is not readable. Only
 * meaningful when the server runs here and nothing else uses it during the measurement.
 */
export function localPostgresCpuMs(): number | null {
  let ticks = 0;
  let found = false;
  try {
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      let stat: string;
      try {
        stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      } catch {
        continue; // exited meanwhile
      }
      if (!stat.includes('(postgres)')) continue;
      found = true;
      // Fields after the command: state is [0]; utime, stime, cutime, cstime are [11] to [14].
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
    }
  } catch {
    return null;
  }
  // Linux reports these in USER_HZ, 100 per second on every common configuration.
  return found ? ticks * 10 : null;
}

/** Sessions holding a temporary replication slot from a `walPosition` until its `walBytesSince`. */
const walPins = new Map<string, pg.Client>();

/**
 * The server's current WAL position, to measure the WAL a workload writes. Where it can, it also makes
 * `pg_walinspect` (PostgreSQL 15's contrib) ready in the database and keeps the WAL from here with a
 * temporary replication slot on a session of its own, so `walBytesSince` can count this database's WAL
 * alone: the server may be shared, its WAL is one stream for all databases, and others' checkpoints
 * would remove the segments before they are read.
 */
export async function walPosition(db: PgDatabase): Promise<string> {
  const inspect = await db.query('CREATE EXTENSION IF NOT EXISTS pg_walinspect').then(
    () => true,
    () => false,
  );
  const pin = new pg.Client({ connectionString: db.options.connectionString });
  try {
    if (!inspect) throw new Error('no pg_walinspect');
    await pin.connect();
    // The slot keeps WAL from the last checkpoint's redo point: the workload starts at the position after it.
    await pin.query(
      `SELECT lsn FROM pg_create_physical_replication_slot('lana_bench_' || pg_backend_pid(), true, true)`,
    );
    const res = await pin.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
    walPins.set(res.rows[0]!.lsn, pin);
    return res.rows[0]!.lsn;
  } catch {
    await pin.end().catch(() => {});
    const res = await db.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
    return res.rows[0]!.lsn;
  }
}

/** WAL written: all of it, and the part that is full-page images. */
export interface WalWritten {
  bytes: number;
  /**
   * Full-page images: the first change to a page after a checkpoint logs the whole page. On a shared
   * server other sessions decide when checkpoints happen (a dropped database forces one), so this part
   * of a workload's WAL is theirs to decide; `bytes - fullPageImageBytes` is the workload's own.
   */
  fullPageImageBytes: number;
}

/**
 * WAL written since `from` by this database: the records touching its relations and the rest of their
 * transactions' records (commits), read with `pg_walinspect`; without it, the server's whole WAL since
 * (full-page images then unknown: 0).
 */
export async function walBytesSince(db: PgDatabase, from: string): Promise<WalWritten> {
  const pin = walPins.get(from);
  walPins.delete(from);
  try {
    // Read up to what is flushed (reading further waits for WAL no one may write): wait for this
    // database's last commit to be flushed, which asynchronous commits (a peer's) leave to the WAL writer.
    if (pin) {
      const end = await db.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
      for (let i = 0; i < 100; i++) {
        const flushed = await db.query<{ ok: boolean }>(
          'SELECT pg_current_wal_flush_lsn() >= CAST(:end AS pg_lsn) AS ok',
          { end: end.rows[0]!.lsn },
        );
        if (flushed.rows[0]!.ok) break;
        await sleep(20);
      }
    }
    const res = await db.query<{ bytes: string; fpi: string }>(
      pin
        ? `WITH r AS (
             SELECT xid, record_length, fpi_length, block_ref
             FROM pg_get_wal_records_info(CAST(:from AS pg_lsn), pg_current_wal_flush_lsn())
           ), mine AS (
             SELECT * FROM r
             WHERE block_ref LIKE '%/' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '/%'
           )
           SELECT (COALESCE((SELECT sum(record_length) FROM mine), 0)
                   + COALESCE((SELECT sum(record_length) FROM r WHERE block_ref IS NULL AND xid <> '0'
                                 AND xid IN (SELECT xid FROM mine)), 0))::text AS bytes,
                  COALESCE((SELECT sum(fpi_length) FROM mine), 0)::text AS fpi`
        : `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), CAST(:from AS pg_lsn))::text AS bytes, '0' AS fpi`,
      { from },
    );
    return { bytes: Number(res.rows[0]!.bytes), fullPageImageBytes: Number(res.rows[0]!.fpi) };
  } finally {
    await pin?.end();
  }
}
