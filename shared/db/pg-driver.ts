import pg from 'pg';
import { parseNamedParams } from './named-params.js';
import {
  type Database,
  DatabaseError,
  isTypedValue,
  type Queryable,
  type QueryResult,
  type Row,
  type SqlParams,
  type SqlValue,
} from './port.js';

/** Type parsers shared by every pool this driver opens, so rows decode as the port documents. */
const typeParsers = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    switch (oid) {
      case 20: // int8
        return (v: string) => BigInt(v);
      case 1082: // date: keep the calendar date, never shift it through a local time zone
        return (v: string) => v;
      case 1114: // timestamp without time zone: the project stores UTC
        return (v: string) => new Date(`${v.replace(' ', 'T')}Z`);
      case 1184: // timestamptz: sessions run in UTC, so values end in +00; parse that form directly (hot path)
        return parseTimestamptz;
      default:
        return pg.types.getTypeParser(oid, format ?? 'text');
    }
  },
} as pg.CustomTypesConfig;

const defaultTimestamptz = pg.types.getTypeParser(1184, 'text') as (v: string) => Date;
function parseTimestamptz(v: string): Date {
  if (v.length >= 22 && v[10] === ' ' && v.endsWith('+00'))
    return new Date(`${v.slice(0, 10)}T${v.slice(11, -3)}Z`);
  return defaultTimestamptz(v);
}

const statementNames = new Map<string, string>();
/** Reuses one prepared statement per SQL text and connection (saves parse/plan time on hot paths). */
function statementName(sql: string): string {
  let name = statementNames.get(sql);
  if (!name) {
    name = `lana_${statementNames.size}`;
    statementNames.set(sql, name);
  }
  return name;
}

function toPgValue(v: SqlValue): unknown {
  if (v === null || v instanceof Date) return v;
  if (typeof v === 'bigint') return v.toString();
  if (isTypedValue(v)) return v.text;
  return v;
}

function bind(sql: string, params: SqlParams | undefined): { text: string; values: unknown[] } {
  const parsed = parseNamedParams(sql);
  const values = parsed.names.map((name) => {
    if (!params || !(name in params)) throw new Error(`SQL parameter :${name} was not given`);
    return toPgValue(params[name] as SqlValue);
  });
  return { text: parsed.positional, values };
}

function mapError(err: unknown): unknown {
  if (err instanceof pg.DatabaseError) {
    return new DatabaseError(err.message, err.code, { cause: err });
  }
  return err;
}

async function run<R extends Row>(
  client: pg.Pool | pg.ClientBase,
  sql: string,
  params: SqlParams | undefined,
  prepare: boolean,
): Promise<QueryResult<R>> {
  const { text, values } = bind(sql, params);
  try {
    const config: pg.QueryConfig = prepare ? { name: statementName(sql), text, values } : { text, values };
    const res = await client.query<R>(config);
    return { rows: res.rows, rowCount: res.rowCount ?? res.rows.length };
  } catch (err) {
    throw mapError(err);
  }
}

/** Wraps a node-postgres client the caller already holds (e.g. inside their own open transaction). */
export function pgQueryable(client: pg.ClientBase): Queryable {
  return { query: (sql, params) => run(client, sql, params, true) };
}

export interface PgDatabaseOptions {
  connectionString: string;
  /** Pool size; the worker needs one connection per concurrent batch operation plus one for LISTEN. */
  max?: number;
  /** Name shown in pg_stat_activity. */
  applicationName?: string;
  /**
   * Seconds after which a pooled connection is closed once idle and replaced by a new one. Default 600.
   * Each connection keeps its prepared statements' generic plans until the table's statistics change, and
   * autovacuum's ANALYZE is what changes them: where it is off, or slow to come, a plan made on a nearly
   * empty `jobs` table would read the whole table as it grows. Replacing connections bounds that to
   * minutes. 0 keeps connections for as long as they are used.
   */
  maxConnectionLifetimeSeconds?: number;
  /**
   * Connections the pool keeps open while idle (default 2, at most `max`); idle ones above it close after
   * 10 seconds. One that reaches its lifetime (or breaks) is replaced at once, in the background, while
   * the pool holds fewer than this. An idle worker's poll holds one connection: a second lets an enqueue,
   * an eager start or a completion run beside it instead of first opening a connection and paying its
   * first statements' planning again.
   */
  minConnections?: number;
}

const DEFAULT_CONNECTION_LIFETIME_SECONDS = 600;
const DEFAULT_MIN_CONNECTIONS = 2;

export class PgDatabase implements Database {
  readonly driverName = 'pg' as const;
  readonly pool: pg.Pool;
  private readonly listeners = new Set<pg.Client>();
  private readonly minConnections: number;
  /** Statements every new pooled session runs before its first use (`warmSessionsWith`). */
  private readonly sessionWarmUps = new Set<string>();
  private closing = false;

  constructor(readonly options: PgDatabaseOptions) {
    const max = options.max ?? 10;
    const min = Math.min(max, options.minConnections ?? DEFAULT_MIN_CONNECTIONS);
    if (!Number.isInteger(min) || min < 0)
      throw new Error('minConnections must be a whole number, 0 or more');
    this.minConnections = min;
    this.pool = new pg.Pool({
      connectionString: options.connectionString,
      max,
      min,
      maxLifetimeSeconds: options.maxConnectionLifetimeSeconds ?? DEFAULT_CONNECTION_LIFETIME_SECONDS,
      application_name: options.applicationName ?? 'lana-jobs',
      types: typeParsers,
      // Every session works in UTC, as Aurora's default parameter group does.
      options: '-c TimeZone=UTC',
      // Awaited by the pool before it hands the new session out.
      onConnect: (client) => this.warmSession(client),
    });
    // A client that loses its connection (a killed backend, a failover) must not crash the process. The
    // pool only listens while a client is idle, so every client gets a listener for its whole life: a
    // statement in flight still fails with the error, and the pool drops the broken client on release.
    this.pool.on('error', () => {});
    this.pool.on('connect', (client) => {
      client.on('error', () => {});
    });
    // The pool closes a session at its lifetime but opens the next only when a statement needs one, which
    // would then wait for the connection and pay the session's first-use costs: replace it ahead instead.
    this.pool.on('remove', () => this.replenish());
  }

  warmSessionsWith(sql: string): void {
    this.sessionWarmUps.add(sql);
  }

  private async warmSession(client: pg.ClientBase): Promise<void> {
    // Best effort: before migrations, say, a warm-up statement may name a table that does not exist yet.
    for (const sql of this.sessionWarmUps) await client.query(sql).catch(() => {});
  }

  /** Opens sessions, in the background, until the pool holds `minConnections` again. */
  private replenish(): void {
    const missing = this.minConnections - this.pool.totalCount;
    if (this.closing || missing <= 0) return;
    // The pool hands out idle sessions before it opens one: ask for those too, and give each back at once.
    const asks = this.pool.idleCount + missing;
    for (let i = 0; i < asks; i++) {
      this.pool.connect().then(
        (client) => client.release(),
        () => {}, // the next statement meets the failure, and reports it
      );
    }
  }

  query<R extends Row = Row>(sql: string, params?: SqlParams): Promise<QueryResult<R>> {
    return run<R>(this.pool, sql, params, true);
  }

  async transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    // The pool only listens for errors on idle clients: a connection lost while checked out (a killed
    // backend, a failover) would otherwise be an unhandled 'error' event that ends the process.
    const onError = (err: Error) => {
      broken = err;
    };
    client.on('error', onError);
    try {
      await client.query('BEGIN');
      const result = await work(pgQueryable(client));
      await client.query('COMMIT');
      return result;
    } catch (err) {
      try {
        await client.query('ROLLBACK');
      } catch (rollbackErr) {
        broken = rollbackErr as Error;
      }
      throw mapError(err);
    } finally {
      client.off('error', onError);
      client.release(broken);
    }
  }

  /**
   * LISTENs on a channel with a dedicated connection (pg only: the Data API has no sessions).
   * Reconnects after a lost connection and calls `onReconnect`, since notifications sent meanwhile are lost.
   * `onNotify` gets each notification's payload ('' when none).
   * Returns a function that stops listening.
   */
  async listen(
    channel: string,
    onNotify: (payload: string) => void,
    onReconnect: () => void = () => onNotify(''),
  ): Promise<() => Promise<void>> {
    let stopped = false;
    let client: pg.Client | undefined;
    const connect = async (): Promise<void> => {
      const c = new pg.Client({
        connectionString: this.options.connectionString,
        application_name: `${this.options.applicationName ?? 'lana-jobs'}-listen`,
      });
      c.on('notification', (message) => onNotify(message.payload ?? ''));
      c.on('error', () => {
        this.listeners.delete(c);
        c.end().catch(() => {});
        if (!stopped) setTimeout(() => reconnect(), 500);
      });
      await c.connect();
      await c.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
      client = c;
      this.listeners.add(c);
    };
    const reconnect = (): void => {
      if (stopped) return;
      connect().then(onReconnect, () => setTimeout(() => reconnect(), 1000));
    };
    await connect();
    return async () => {
      stopped = true;
      if (client) {
        this.listeners.delete(client);
        await client.end().catch(() => {});
      }
    };
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const c of this.listeners) await c.end().catch(() => {});
    this.listeners.clear();
    await this.pool.end();
  }
}
