import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import pg from 'pg';
import { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import { splitSqlScript } from '../../shared/db/sql-script.js';

/**
 * A local server speaking the RDS Data API's HTTP protocol (rest-json: POST /Execute, /BatchExecute,
 * /BeginTransaction, /CommitTransaction, /RollbackTransaction; errors as a 4xx with `x-amzn-errortype`)
 * over a real PostgreSQL, so the real `RDSDataClient` and the real Data API driver are exercised in tests.
 *
 * Modelled (see /work/shared/notes/aws-facts.md §1 and the fidelity checklist in §7):
 * - `:name` placeholders, found by the fixture's own scanner (casts, quotes, `E''` escapes, nested
 *   comments and dollar quotes skipped), never the driver's, so the two can disagree in a test; type hints as casts with their text formats
 *   checked, and unhinted values typed the way the service binds them (stringValue → varchar,
 *   longValue → int8, doubleValue → float8, booleanValue → bool, blobValue → bytea; isNull untyped), so a
 *   string sent to a uuid/timestamp column fails here as it does on AWS;
 * - ValidationException for arrayValue parameters, multiple statements, `schema`, an over-long `sql`;
 * - records mode with column metadata (typeName = pg type name), longReturnType/decimalReturnType,
 *   numeric/json/date/timestamp as strings, timestamptz in UTC without an offset, bytea as base64, 1-D arrays
 *   as arrayValue, money/geometric types as UnsupportedResultException;
 * - numberOfRecordsUpdated; BatchExecute (atomic outside a transaction, no result set);
 * - transactions: one pinned connection per id, expired after 3 idle minutes, aborted (gone) after an SQL
 *   error, a timeout or an oversized result, a concurrent call rejected with "Transaction is still running
 *   a query", commit/rollback status strings;
 * - the 45 s statement timeout (StatementTimeoutException), the 1 MiB response cap, SQL errors as
 *   DatabaseErrorException whose message ends in `SQLState: XXXXX`; the 64 KB-per-row limit;
 * - sessions in the server's time zone unless `sessionTimeZone` says another (the service's sessions
 *   follow the cluster's `timezone` parameter, which nothing forces to UTC), with timestamptz results
 *   still returned in UTC, as the service does;
 * - injected faults (`injectFault`): a call that fails without running, or one that runs and then loses
 *   its answer (`afterRunning`), which the SDK's own retries then send again, as on a reset connection.
 * Not modelled: `formatRecordsAs: 'JSON'` (rejected, so nothing silently relies on it), `continueAfterTimeout`,
 * the 24 h transaction limit, IAM/Secrets Manager (ARNs accepted as given: every call runs as the
 * connection string's user), SigV4 (ignored), auto-pause (inject DatabaseResumingException instead), a
 * password rotation (inject the authentication failure: `DatabaseErrorException` ending in
 * `SQLState: 28P01`), the exact wording of the service's row-limit error, and the parameter types the
 * service gives a TIMESTAMP hint beyond `timestamp`.
 */
export type DataApiOperation =
  | 'Execute'
  | 'BatchExecute'
  | 'BeginTransaction'
  | 'CommitTransaction'
  | 'RollbackTransaction';

export interface DataApiFault {
  /** The error type name, e.g. `DatabaseResumingException`. */
  error: string;
  message?: string;
  /** How many calls fail (default 1). */
  times?: number;
  /** Only calls of this operation (default: any). */
  operation?: DataApiOperation;
  /** HTTP status (default 400; a 5xx is retried by the SDK itself). */
  status?: number;
  /**
   * The call runs (and, outside a transaction, commits) before it fails: its answer is lost on the way
   * back, as with a connection reset. Default false: the call fails without running.
   */
  afterRunning?: boolean;
}

export interface DataApiFixtureOptions {
  /** A transaction no call has used for this long is rolled back. Default 3 minutes. */
  transactionIdleMs?: number;
  /** Statements are cancelled after this long. Default 45 s. */
  statementTimeoutMs?: number;
  /** Responses above this many bytes fail. Default 1 MiB. */
  maxResponseBytes?: number;
  /** A result row whose values take more than this many bytes fails. Default 64,000 (the service's 64 KB). */
  maxRowBytes?: number;
  /** The sessions' time zone (`TimeZone`), e.g. `America/New_York`. Default: the server's own. */
  sessionTimeZone?: string;
  /** Connections per database. Default 10. */
  poolSize?: number;
  /**
   * Told each statement's time on PostgreSQL: its wall time (the driver round trip on the local socket,
   * not the HTTP request around it) and, where `/proc` shows it (Linux, the server on this machine), the
   * CPU time its server process spent on it, which a busy machine does not inflate. The simulator charges
   * it as database time.
   */
  onStatement?: (ms: number, cpuMs: number | undefined) => void;
  /**
   * false: commits do not wait for the WAL flush (`synchronous_commit=off`), so a statement's measured time
   * is its execution, not this machine's disk; the simulator charges Aurora's commit apart.
   */
  synchronousCommit?: boolean;
}

export interface DataApiFixture {
  endpoint: string;
  /** Calls received, by operation (faulted calls included): the benchmark's "Data API calls". */
  readonly counts: Record<DataApiOperation, number>;
  /** The next `times` calls (of `operation`, if given) fail with this error (see `afterRunning`). */
  injectFault(fault: DataApiFault): void;
  clearFaults(): void;
  resetCounts(): void;
  /** Transactions begun and not yet committed, rolled back, aborted or expired. */
  openTransactions(): number;
  close(): Promise<void>;
}

/** The ARNs the tests' drivers name: the fixture serves whatever they say. */
export const FIXTURE_ARNS = {
  resourceArn: 'arn:aws:rds:us-east-1:123456789012:cluster:lana-jobs',
  secretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:lana-jobs',
} as const;

/**
 * The Data API driver over the fixture, on `database`. By default the SDK makes one attempt per call, so a
 * fault reaches the test; `sdkRetries` keeps the SDK's default retries, as on AWS (a lost answer then makes
 * it send the statement again).
 */
export function dataApiDriverOver(
  fixture: DataApiFixture,
  database: string,
  options: { sdkRetries?: boolean; secretArn?: string } = {},
): DataApiDatabase {
  return new DataApiDatabase({
    ...FIXTURE_ARNS,
    ...(options.secretArn ? { secretArn: options.secretArn } : {}),
    database,
    clientConfig: {
      endpoint: fixture.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
      ...(options.sdkRetries ? {} : { maxAttempts: 1 }),
    },
  });
}

const OPERATIONS: readonly DataApiOperation[] = [
  'Execute',
  'BatchExecute',
  'BeginTransaction',
  'CommitTransaction',
  'RollbackTransaction',
];
const MAX_SQL_CHARS = 65_536;
const MAX_REQUEST_BYTES = 4 * 1024 * 1024;

interface Field {
  isNull?: boolean;
  booleanValue?: boolean;
  longValue?: number;
  doubleValue?: number;
  stringValue?: string;
  blobValue?: string;
  arrayValue?: ArrayValue;
}
interface ArrayValue {
  booleanValues?: boolean[];
  longValues?: number[];
  doubleValues?: number[];
  stringValues?: (string | null)[];
  arrayValues?: ArrayValue[];
}
interface SqlParameter {
  name?: string;
  value?: Field;
  typeHint?: string;
}
interface ResultSetOptions {
  longReturnType?: string;
  decimalReturnType?: string;
}
type Body = Record<string, unknown>;

class ApiError extends Error {
  constructor(
    readonly type: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

/** Type hints: the cast each becomes, and the text format the service accepts for it. */
const HINTS: Record<string, { cast: string; format?: RegExp; example?: string }> = {
  UUID: { cast: 'uuid' },
  JSON: { cast: 'json' },
  DECIMAL: { cast: 'numeric' },
  DATE: { cast: 'date', format: /^\d{4}-\d{2}-\d{2}$/, example: 'YYYY-MM-DD' },
  TIME: { cast: 'time', format: /^\d{2}:\d{2}:\d{2}(\.\d{1,9})?$/, example: 'HH:MM:SS[.FFF]' },
  TIMESTAMP: {
    cast: 'timestamp',
    format: /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,9})?$/,
    example: 'YYYY-MM-DD HH:MM:SS[.FFF]',
  },
};

/** JDBC type codes for the column metadata's `type` (informational; the driver decodes by typeName). */
const JDBC_TYPES: Record<string, number> = {
  bool: -7,
  int2: 5,
  int4: 4,
  int8: -5,
  float4: 7,
  float8: 8,
  numeric: 2,
  text: 12,
  varchar: 12,
  date: 91,
  time: 92,
  timestamp: 93,
  timestamptz: 93,
  bytea: -2,
};
/** Types the Data API cannot return (cast them to text in SQL). */
const UNSUPPORTED_TYPES = new Set(['money', 'point', 'lseg', 'path', 'box', 'polygon', 'line', 'circle']);

interface PgType {
  name: string;
  /** For array types: the element type's name. */
  element?: string;
}

interface Transaction {
  client: pg.PoolClient;
  busy: boolean;
  timer: NodeJS.Timeout;
}

// Results come back as raw text; the fixture renders Data API fields from it.
const rawTypes = { getTypeParser: () => (value: string) => value } as pg.CustomTypesConfig;
// text[] (oid 1009): splits any 1-D array literal into its elements' text, NULL as null.
const parseTextArray = (pg.types.getTypeParser as (oid: number) => (value: string) => unknown[])(1009);

export async function startDataApiFixture(
  connectionString: string,
  options: DataApiFixtureOptions = {},
): Promise<DataApiFixture> {
  const transactionIdleMs = options.transactionIdleMs ?? 3 * 60 * 1000;
  const statementTimeoutMs = options.statementTimeoutMs ?? 45_000;
  const maxResponseBytes = options.maxResponseBytes ?? 1024 * 1024;
  const maxRowBytes = options.maxRowBytes ?? 64_000;
  if (options.sessionTimeZone !== undefined && !/^[A-Za-z0-9_+\-/]+$/.test(options.sessionTimeZone))
    throw new Error(`sessionTimeZone "${options.sessionTimeZone}" is not a time zone name`);

  // One pool (and type catalogue) per database named in the requests, as the `database` parameter selects.
  const databases = new Map<string, { pool: pg.Pool; types: Map<number, PgType> }>();
  const databaseFor = (database: unknown) => {
    const url = new URL(connectionString);
    if (typeof database === 'string' && database) url.pathname = `/${database}`;
    const key = url.toString();
    let entry = databases.get(key);
    if (!entry) {
      const pool = new pg.Pool({
        connectionString: key,
        max: options.poolSize ?? 10,
        types: rawTypes,
        // The service cancels at 45 s. The time zone is the server's unless a test asks for another:
        // nothing on the client side makes a session UTC.
        options: `-c statement_timeout=${statementTimeoutMs}${options.sessionTimeZone ? ` -c TimeZone=${options.sessionTimeZone}` : ''}${options.synchronousCommit === false ? ' -c synchronous_commit=off' : ''}`,
      });
      pool.on('error', () => {});
      // A connection killed while checked out (a pinned transaction's, say) errors on the client itself: the
      // statement fails and the pool discards the client; the process must not die of the event.
      pool.on('connect', (client) => client.on('error', () => {}));
      entry = { pool, types: new Map() };
      databases.set(key, entry);
    }
    return entry;
  };
  const transactions = new Map<string, Transaction>();
  const counts = Object.fromEntries(OPERATIONS.map((op) => [op, 0])) as Record<DataApiOperation, number>;
  const faults: (Required<Omit<DataApiFault, 'operation'>> & { operation?: DataApiOperation })[] = [];

  async function typeOf(client: pg.ClientBase, types: Map<number, PgType>, oid: number): Promise<PgType> {
    let type = types.get(oid);
    if (!type) {
      // Loaded on demand: migrations create types (enums) after the pool exists.
      const res = await client.query<{ oid: string; typname: string; elem: string | null }>(
        `SELECT t.oid, t.typname, e.typname AS elem
         FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'`,
      );
      for (const r of res.rows) types.set(Number(r.oid), { name: r.typname, element: r.elem ?? undefined });
      type = types.get(oid) ?? { name: 'unknown' };
    }
    return type;
  }

  const endTransaction = async (id: string, sql: 'COMMIT' | 'ROLLBACK') => {
    const tx = transactions.get(id);
    if (!tx) throw transactionNotFound(id);
    transactions.delete(id);
    clearTimeout(tx.timer);
    let broken: Error | undefined;
    try {
      await tx.client.query(sql);
    } catch (err) {
      broken = err as Error;
      throw sqlError(err);
    } finally {
      tx.client.release(broken);
    }
  };

  const armIdleTimer = (id: string, tx: Transaction) => {
    clearTimeout(tx.timer);
    tx.timer = setTimeout(() => void endTransaction(id, 'ROLLBACK').catch(() => {}), transactionIdleMs);
    tx.timer.unref();
  };

  /** Runs `work` on the transaction's connection, one call at a time; an error aborts the transaction. */
  async function inTransaction<T>(id: string, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const tx = transactions.get(id);
    if (!tx) throw transactionNotFound(id);
    if (tx.busy) throw new ApiError('DatabaseErrorException', 'Transaction is still running a query');
    tx.busy = true;
    try {
      const result = await work(tx.client);
      tx.busy = false;
      armIdleTimer(id, tx);
      return result;
    } catch (err) {
      tx.busy = false;
      // The service aborts the transaction on any failed statement: later calls find no transaction.
      if (transactions.has(id)) await endTransaction(id, 'ROLLBACK').catch(() => {});
      throw err;
    }
  }

  function validateCommon(body: Body, needsSql: boolean): void {
    for (const member of ['resourceArn', 'secretArn', ...(needsSql ? ['sql'] : [])]) {
      if (typeof body[member] !== 'string' || body[member] === '')
        throw new ApiError('ValidationException', `${member} is required`);
    }
    if (body.schema !== undefined)
      throw new ApiError('ValidationException', "The schema parameter isn't supported.");
    if (!needsSql) return;
    const sql = body.sql as string;
    if (sql.length > MAX_SQL_CHARS)
      throw new ApiError('ValidationException', `sql must be at most ${MAX_SQL_CHARS} characters`);
    if (splitSqlScript(sql).length > 1)
      throw new ApiError('ValidationException', "Multistatements aren't supported.");
    if (body.formatRecordsAs !== undefined && body.formatRecordsAs !== 'NONE')
      throw new ApiError('ValidationException', 'formatRecordsAs JSON is not modelled by the local fixture');
  }

  /** The statement for PostgreSQL: `$n` placeholders, each cast to the type the service would bind. */
  function bind(sql: string, parameters: SqlParameter[]): { text: string; values: unknown[] } {
    const parsed = scanPlaceholders(sql);
    const byName = new Map<string, SqlParameter>();
    for (const p of parameters) {
      if (!p.name) throw new ApiError('ValidationException', 'every parameter needs a name');
      if (p.value?.arrayValue !== undefined)
        throw new ApiError('ValidationException', 'Array parameters are not supported.');
      byName.set(p.name, p);
    }
    const casts: (string | undefined)[] = [];
    const values = parsed.names.map((name) => {
      const p = byName.get(name);
      if (!p?.value)
        throw new ApiError(
          'DatabaseErrorException',
          `ERROR: No value specified for parameter :${name}; SQLState: 22023`,
        );
      const v = p.value;
      const hint = p.typeHint ? HINTS[p.typeHint] : undefined;
      if (p.typeHint && !hint) throw new ApiError('ValidationException', `unknown typeHint ${p.typeHint}`);
      if (v.isNull) {
        casts.push(hint?.cast);
        return null;
      }
      if (hint) {
        if (v.stringValue === undefined)
          throw new ApiError('ValidationException', `typeHint ${p.typeHint} applies to a stringValue only`);
        if (hint.format && !hint.format.test(v.stringValue))
          throw new ApiError(
            'ValidationException',
            `parameter :${name} with typeHint ${p.typeHint} must be formatted ${hint.example}`,
          );
        casts.push(hint.cast);
        return v.stringValue;
      }
      const [cast, value] = unhinted(name, v);
      casts.push(cast);
      return value;
    });
    let text = parsed.positional;
    // A literal `$1` in the original text would be indistinguishable from a placeholder; such statements
    // get no casts (lenient) rather than a corrupted text.
    if (!/\$\d/.test(sql)) {
      text = text.replace(/\$(\d+)(?!\d)/g, (whole, n: string) => {
        const cast = casts[Number(n) - 1];
        return cast ? `(${whole}::${cast})` : whole;
      });
    }
    return { text, values };
  }

  async function run(
    client: pg.ClientBase,
    { text, values }: { text: string; values: unknown[] },
  ): Promise<pg.QueryArrayResult<unknown[]>> {
    const pid = options.onStatement ? await backendPid(client) : undefined;
    const cpuBefore = cpuNs(pid);
    const started = performance.now();
    try {
      return await client.query({ text, values, rowMode: 'array' });
    } catch (err) {
      throw sqlError(err);
    } finally {
      const wall = performance.now() - started;
      const cpuAfter = cpuNs(pid);
      options.onStatement?.(
        wall,
        cpuBefore !== undefined && cpuAfter !== undefined ? (cpuAfter - cpuBefore) / 1e6 : undefined,
      );
    }
  }

  async function render(
    client: pg.ClientBase,
    types: Map<number, PgType>,
    result: pg.QueryArrayResult<unknown[]>,
    body: Body,
  ): Promise<Body> {
    // DML without RETURNING, and DDL, have no result set.
    if (!result.fields || result.fields.length === 0)
      return { numberOfRecordsUpdated: result.rowCount ?? 0, generatedFields: [] };
    const options = (body.resultSetOptions ?? {}) as ResultSetOptions;
    const columnTypes = await Promise.all(result.fields.map((f) => typeOf(client, types, f.dataTypeID)));
    for (const [i, type] of columnTypes.entries()) {
      if (UNSUPPORTED_TYPES.has(type.name) || UNSUPPORTED_TYPES.has(type.element ?? ''))
        throw new ApiError(
          'UnsupportedResultException',
          `The result contains the unsupported data type ${type.name} (column ${result.fields[i]!.name}).`,
        );
    }
    for (const row of result.rows) {
      const bytes = row.reduce<number>((sum, v) => sum + (v === null ? 0 : Buffer.byteLength(String(v))), 0);
      if (bytes > maxRowBytes)
        throw new ApiError(
          'DatabaseErrorException',
          `Database returned a row of ${bytes} bytes, over the ${maxRowBytes}-byte per-row limit`,
        );
    }
    const records = result.rows.map((row) =>
      row.map((value, i) => toField(value as string | null, columnTypes[i]!, options)),
    );
    const response: Body = {
      records,
      numberOfRecordsUpdated: result.command === 'SELECT' ? 0 : (result.rowCount ?? 0),
    };
    if (body.includeResultMetadata === true) {
      response.columnMetadata = result.fields.map((f, i) => {
        const type = columnTypes[i]!;
        return {
          name: f.name,
          label: f.name,
          typeName: type.name,
          type: type.element ? 2003 : (JDBC_TYPES[type.name] ?? 1111),
          ...(type.element ? { arrayBaseColumnType: JDBC_TYPES[type.element] ?? 1111 } : {}),
        };
      });
    }
    if (Buffer.byteLength(JSON.stringify(response)) > maxResponseBytes)
      throw new ApiError(
        'DatabaseErrorException',
        'Database returned more than the allowed response size limit',
      );
    return response;
  }

  async function execute(body: Body): Promise<Body> {
    validateCommon(body, true);
    // Validation errors come before the database is involved, so they do not abort a transaction.
    const statement = bind(body.sql as string, (body.parameters ?? []) as SqlParameter[]);
    const txId = body.transactionId as string | undefined;
    const { pool, types } = databaseFor(body.database);
    if (txId)
      return inTransaction(txId, async (client) => render(client, types, await run(client, statement), body));
    const client = await pool.connect();
    try {
      return await render(client, types, await run(client, statement), body);
    } finally {
      client.release();
    }
  }

  async function batchExecute(body: Body): Promise<Body> {
    validateCommon(body, true);
    const sets = (body.parameterSets as SqlParameter[][] | undefined) ?? [[]];
    const statements = sets.map((parameters) => bind(body.sql as string, parameters));
    const txId = body.transactionId as string | undefined;
    // One DML over every parameter set; no result set comes back.
    const runAll = async (client: pg.ClientBase) => {
      for (const statement of statements) await run(client, statement);
      return { updateResults: statements.map(() => ({ generatedFields: [] })) };
    };
    if (txId) return inTransaction(txId, runAll);
    // Outside a transaction the batch commits (or fails) as a whole.
    const client = await databaseFor(body.database).pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await runAll(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch((e: Error) => {
        broken = e;
      });
      throw err;
    } finally {
      client.release(broken);
    }
  }

  const routes: Record<DataApiOperation, (body: Body) => Promise<Body>> = {
    Execute: execute,
    BatchExecute: batchExecute,
    BeginTransaction: async (body) => {
      validateCommon(body, false);
      const client = await databaseFor(body.database).pool.connect();
      try {
        await client.query('BEGIN');
      } catch (err) {
        client.release(err as Error);
        throw sqlError(err);
      }
      // Real ids are opaque base64 strings (at most 192 characters).
      const transactionId = randomBytes(48).toString('base64');
      const tx: Transaction = { client, busy: false, timer: setTimeout(() => {}, 0) };
      transactions.set(transactionId, tx);
      armIdleTimer(transactionId, tx);
      return { transactionId };
    },
    CommitTransaction: async (body) => {
      validateCommon(body, false);
      const id = String(body.transactionId ?? '');
      if (transactions.get(id)?.busy)
        throw new ApiError('DatabaseErrorException', 'Transaction is still running a query');
      await endTransaction(id, 'COMMIT');
      return { transactionStatus: 'Transaction Committed' };
    },
    RollbackTransaction: async (body) => {
      validateCommon(body, false);
      const id = String(body.transactionId ?? '');
      if (transactions.get(id)?.busy)
        throw new ApiError('DatabaseErrorException', 'Transaction is still running a query');
      await endTransaction(id, 'ROLLBACK');
      return { transactionStatus: 'Rollback Complete' };
    },
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const send = (status: number, body: unknown, errorType?: string) => {
        res.writeHead(status, {
          'content-type': 'application/json',
          ...(errorType ? { 'x-amzn-errortype': errorType } : {}),
        });
        res.end(JSON.stringify(body));
      };
      try {
        const operation = (req.url ?? '').replace(/^\//, '').replace(/\?.*$/, '') as DataApiOperation;
        const route = req.method === 'POST' ? routes[operation] : undefined;
        if (!route) throw new ApiError('UnknownOperationException', `unknown operation ${req.url}`, 404);
        counts[operation]++;
        const fault = faults.find((f) => !f.operation || f.operation === operation);
        if (fault && --fault.times <= 0) faults.splice(faults.indexOf(fault), 1);
        if (fault && !fault.afterRunning) throw new ApiError(fault.error, fault.message, fault.status);
        const raw = Buffer.concat(chunks);
        if (raw.length > MAX_REQUEST_BYTES)
          throw new ApiError('ValidationException', 'The request exceeds the 4 MiB size limit');
        let body: Body;
        try {
          body = JSON.parse(raw.toString('utf8') || '{}') as Body;
        } catch {
          throw new ApiError('SerializationException', 'the request body is not JSON');
        }
        const answer = await route(body);
        if (fault) throw new ApiError(fault.error, fault.message, fault.status);
        send(200, answer);
      } catch (err) {
        if (err instanceof ApiError) send(err.status, { message: err.message }, err.type);
        else send(500, { message: (err as Error).message }, 'InternalServerErrorException');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    counts,
    injectFault: (f) =>
      faults.push({
        error: f.error,
        message: f.message ?? f.error,
        times: f.times ?? 1,
        operation: f.operation,
        status: f.status ?? 400,
        afterRunning: f.afterRunning ?? false,
      }),
    clearFaults: () => {
      faults.length = 0;
    },
    resetCounts: () => {
      for (const op of OPERATIONS) counts[op] = 0;
    },
    openTransactions: () => transactions.size,
    async close() {
      for (const id of [...transactions.keys()]) await endTransaction(id, 'ROLLBACK').catch(() => {});
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      for (const { pool } of databases.values()) await pool.end();
    },
  };
}

const backendPids = new WeakMap<pg.ClientBase, number | undefined>();

/** The server process behind a connection (asked once per connection). */
async function backendPid(client: pg.ClientBase): Promise<number | undefined> {
  if (!backendPids.has(client)) {
    const r = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid').catch(() => undefined);
    backendPids.set(client, r?.rows[0]?.pid);
  }
  return backendPids.get(client);
}

/** The nanoseconds a process has run on a CPU (`/proc/<pid>/schedstat`), where readable. */
function cpuNs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]);
  } catch {
    return undefined;
  }
}

/** An unhinted value is bound with the JDBC type of its Field member, as the service does. */
function unhinted(name: string, v: Field): [string, unknown] {
  if (v.stringValue !== undefined) return ['varchar', v.stringValue];
  if (v.longValue !== undefined) return ['int8', v.longValue];
  if (v.doubleValue !== undefined) return ['float8', v.doubleValue];
  if (v.booleanValue !== undefined) return ['bool', v.booleanValue];
  if (v.blobValue !== undefined) return ['bytea', Buffer.from(v.blobValue, 'base64')];
  throw new ApiError('ValidationException', `parameter :${name} has no value`);
}

function transactionNotFound(id: string): ApiError {
  return new ApiError('TransactionNotFoundException', `Transaction ${id} isn't found`, 404);
}

/** A PostgreSQL error as the service reports it: DatabaseErrorException ending in the SQLSTATE. */
function sqlError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const e = err as pg.DatabaseError;
  if (e.code === '57014')
    return new ApiError('StatementTimeoutException', 'The statement timed out (45 s) and was cancelled.');
  const detail = e.detail ? `\n  Detail: ${e.detail}` : '';
  const position = e.position ? `\n  Position: ${e.position}` : '';
  return new ApiError(
    'DatabaseErrorException',
    `ERROR: ${e.message}${detail}${position}; SQLState: ${e.code ?? 'XX000'}`,
  );
}

/** One value as the service returns it in records mode, from PostgreSQL's text form. */
function toField(value: string | null, type: PgType, options: ResultSetOptions): Field {
  if (value === null) return { isNull: true };
  if (type.element) {
    if (value.startsWith('{{'))
      throw new ApiError('UnsupportedResultException', 'Multidimensional arrays are not supported.');
    return { arrayValue: toArrayValue(parseTextArray(value) as (string | null)[], type.element, options) };
  }
  switch (type.name) {
    case 'bool':
      return { booleanValue: value === 't' };
    case 'int2':
    case 'int4':
    case 'int8':
      return options.longReturnType === 'STRING' ? { stringValue: value } : { longValue: Number(value) };
    case 'float4':
    case 'float8':
      return { doubleValue: Number(value) };
    case 'numeric':
      if (options.decimalReturnType === 'DOUBLE_OR_LONG')
        return /^-?\d+$/.test(value) ? { longValue: Number(value) } : { doubleValue: Number(value) };
      return { stringValue: value };
    case 'timestamptz':
      // Always in UTC whatever the session's time zone, and without the offset.
      return { stringValue: timestamptzInUtc(value) };
    case 'bytea':
      return { blobValue: Buffer.from(value.replace(/^\\x/, ''), 'hex').toString('base64') };
    default:
      return { stringValue: value };
  }
}

function toArrayValue(items: (string | null)[], element: string, options: ResultSetOptions): ArrayValue {
  switch (element) {
    case 'bool':
      return { booleanValues: items.map((v) => v === 't' || v === 'true') };
    case 'int2':
    case 'int4':
    case 'int8':
      return options.longReturnType === 'STRING'
        ? { stringValues: items }
        : { longValues: items.map((v) => Number(v)) };
    case 'float4':
    case 'float8':
      return { doubleValues: items.map((v) => Number(v)) };
    case 'timestamptz':
      return { stringValues: items.map((v) => (v === null ? null : timestamptzInUtc(v))) };
    default:
      return { stringValues: items };
  }
}

/**
 * PostgreSQL's text form of a timestamptz in the session's zone (`2026-11-28 17:05:01.5-05`,
 * `… +05:30`) as the same instant in UTC without an offset (`2026-11-28 22:05:01.5`). `infinity` and BC
 * dates are passed through as printed.
 */
export function timestamptzInUtc(text: string): string {
  const m = /^(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(\.\d+)?([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?$/.exec(
    text,
  );
  if (!m) return text;
  const [, y, mo, d, h, mi, sec, fraction, sign, oh, om, os] = m;
  const offsetSeconds =
    (sign === '-' ? -1 : 1) * (Number(oh) * 3600 + Number(om ?? 0) * 60 + Number(os ?? 0));
  const local = new Date(0);
  local.setUTCFullYear(Number(y), Number(mo) - 1, Number(d));
  local.setUTCHours(Number(h), Number(mi), Number(sec), 0);
  const utc = new Date(local.getTime() - offsetSeconds * 1000);
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  return (
    `${pad(utc.getUTCFullYear(), 4)}-${pad(utc.getUTCMonth() + 1)}-${pad(utc.getUTCDate())} ` +
    `${pad(utc.getUTCHours())}:${pad(utc.getUTCMinutes())}:${pad(utc.getUTCSeconds())}${fraction ?? ''}`
  );
}

/**
 * The fixture's own placeholder scanner (deliberately not the driver's `shared/db/named-params.ts`, so a
 * statement the two read differently fails a test instead of agreeing with itself). It follows
 * PostgreSQL's lexer: '…' strings with '' doubling, E'…' strings with backslash escapes, "…" identifiers,
 * $tag$…$tag$ bodies, -- line and nested /* *\/ block comments, and `::` casts are not placeholders.
 * Returns the statement with `$1…$n` (one number per distinct name) and the names in that order.
 */
export function scanPlaceholders(sql: string): { positional: string; names: string[] } {
  const names: string[] = [];
  let out = '';
  let i = 0;
  /** The token `re` (a sticky regex) matches at `i`, if any. */
  const at = (re: RegExp): string | undefined => {
    re.lastIndex = i;
    return re.exec(sql)?.[0];
  };
  const wordBefore = () => i > 0 && /[A-Za-z0-9_]/.test(sql[i - 1]!);
  const skipped = (): string | undefined =>
    (wordBefore() ? undefined : at(/[Ee]'(?:[^'\\]|\\.|'')*'?/y)) ??
    at(/'(?:[^']|'')*'?/y) ??
    at(/"(?:[^"]|"")*"?/y) ??
    at(/--[^\n]*/y) ??
    blockComment() ??
    dollarQuoted() ??
    at(/::/y);
  const blockComment = (): string | undefined => {
    if (!sql.startsWith('/*', i)) return undefined;
    let depth = 0;
    let j = i;
    while (j < sql.length) {
      if (sql.startsWith('/*', j)) {
        depth++;
        j += 2;
      } else if (sql.startsWith('*/', j)) {
        depth--;
        j += 2;
        if (depth === 0) break;
      } else j++;
    }
    return sql.slice(i, j);
  };
  const dollarQuoted = (): string | undefined => {
    const tag = wordBefore() ? undefined : at(/\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$/y);
    if (tag === undefined) return undefined;
    const close = sql.indexOf(tag, i + tag.length);
    return sql.slice(i, close === -1 ? sql.length : close + tag.length);
  };
  while (i < sql.length) {
    const skip = skipped();
    if (skip !== undefined) {
      out += skip;
      i += skip.length;
      continue;
    }
    const placeholder = at(/:[A-Za-z_][A-Za-z0-9_]*/y);
    if (placeholder !== undefined) {
      const name = placeholder.slice(1);
      let n = names.indexOf(name) + 1;
      if (n === 0) n = names.push(name);
      out += `$${n}`;
      i += placeholder.length;
      continue;
    }
    out += sql[i];
    i++;
  }
  return { positional: out, names };
}
