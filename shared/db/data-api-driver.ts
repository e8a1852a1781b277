import {
  type ArrayValue,
  BeginTransactionCommand,
  type ColumnMetadata,
  CommitTransactionCommand,
  ExecuteStatementCommand,
  type ExecuteStatementCommandOutput,
  type Field,
  RDSDataClient,
  type RDSDataClientConfig,
  RollbackTransactionCommand,
  type SqlParameter,
} from '@aws-sdk/client-rds-data';
import { parseNamedParams, rewritePlaceholders } from './named-params.js';
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

/**
 * The database port over the RDS Data API (Aurora PostgreSQL, HTTPS, no connections to manage), for the
 * Lambda functions and `lana-jobs --data-api`. It hides the Data API's differences from node-postgres:
 * - parameters travel with type hints (UUID, JSON, TIMESTAMP in its `YYYY-MM-DD HH:MM:SS.FFF` UTC form,
 *   DECIMAL for bigints, DATE); there are no array parameters (the SQL unpacks JSON);
 * - results are decoded by column type to exactly what the pg driver returns: timestamps arrive without an
 *   offset and are UTC, int8 and numeric arrive as strings (asked for as strings so nothing loses
 *   precision), json arrives as text;
 * - SQL errors (`DatabaseErrorException`) become `DatabaseError` with their SQLSTATE;
 *   `DatabaseResumingException` (a paused Serverless v2 cluster waking up) is retried with backoff;
 * - an authentication failure while a rotation changes the password is retried briefly, outside
 *   transactions only (inside one, the session already logged in; a failure there is not rotation);
 * - a result over the 1 MiB response limit becomes an error that says so.
 */
export interface DataApiOptions {
  /** The Aurora cluster ARN. */
  resourceArn: string;
  /** The Secrets Manager secret holding the database credentials. */
  secretArn: string;
  database: string;
  /** A client to use (and not destroy on close); by default the driver creates one. */
  client?: RDSDataClient;
  /** Settings for the client the driver creates (e.g. `endpoint` for the local fixture). */
  clientConfig?: RDSDataClientConfig;
  /** How long to keep retrying while the cluster resumes from auto-pause. Default 45 s. */
  resumeRetry?: { maxWaitMs: number; initialDelayMs?: number };
  /**
   * Retries of a call refused because the password was rejected, outside transactions: during a
   * rotation the secret and the database briefly disagree. Default 3 retries, waits doubling from 500 ms
   * (under 4 s in all); then the error is thrown as it came.
   */
  authRetry?: { retries: number; initialDelayMs?: number };
}

/**
 * A login refused with the password the secret holds (SQLSTATE 28P01 or 28000): during a rotation the
 * secret and the database disagree for a moment. The statement never ran, so sending it again is safe.
 */
export function isAuthenticationFailure(err: unknown): boolean {
  const message = err instanceof Error ? err.message : String(err);
  return /password authentication failed|SQLState: 28(P01|000)/i.test(message);
}

/** The client the driver creates when none is given. */
export function createDataApiClient(config: RDSDataClientConfig = {}): RDSDataClient {
  // The Data API cancels statements after 45 s; an SDK timeout shorter than that plus an SDK retry could
  // apply a statement twice, so the request timeout stays above it.
  return new RDSDataClient({ requestHandler: { requestTimeout: 60_000 }, ...config });
}

export class DataApiDatabase implements Database {
  readonly driverName = 'data-api' as const;
  /** The Data API fails a statement returning a row over 64 KB. */
  readonly maxRowBytes = 64_000;
  readonly resendsStatements = true;
  /** The Data API rejects a request over 4 MiB, its JSON envelope included. */
  readonly maxRequestBytes = 4 * 1024 * 1024;
  private readonly client: RDSDataClient;
  private readonly ownsClient: boolean;

  constructor(private readonly options: DataApiOptions) {
    this.ownsClient = !options.client;
    this.client = options.client ?? createDataApiClient(options.clientConfig);
  }

  query<R extends Row = Row>(sql: string, params?: SqlParams): Promise<QueryResult<R>> {
    return this.execute<R>(sql, params, undefined);
  }

  async transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T> {
    const { resourceArn, secretArn, database } = this.options;
    const { transactionId } = await this.call(
      () => this.client.send(new BeginTransactionCommand({ resourceArn, secretArn, database })),
      true,
    );
    if (!transactionId) throw new Error('the Data API began a transaction without an id');
    // Statements run one at a time: the Data API rejects a second concurrent call on one transaction
    // ("Transaction is still running a query"), so a caller's Promise.all is queued here.
    let chain: Promise<unknown> = Promise.resolve();
    const tx: Queryable = {
      query: <R extends Row = Row>(sql: string, params?: SqlParams) => {
        const next = chain.then(() => this.execute<R>(sql, params, transactionId));
        chain = next.catch(() => {});
        return next;
      },
    };
    let result: T;
    try {
      result = await work(tx);
      await chain;
    } catch (err) {
      // A statement still in flight would make the rollback fail as a concurrent call: let it finish.
      await chain;
      await this.client
        .send(new RollbackTransactionCommand({ resourceArn, secretArn, transactionId }))
        // An SQL error has already aborted (and removed) the transaction on the Data API side.
        .catch(() => {});
      throw err;
    }
    await this.call(
      () => this.client.send(new CommitTransactionCommand({ resourceArn, secretArn, transactionId })),
      false,
    );
    return result;
  }

  async close(): Promise<void> {
    if (this.ownsClient) this.client.destroy();
  }

  private async execute<R extends Row>(
    sql: string,
    params: SqlParams | undefined,
    transactionId: string | undefined,
  ): Promise<QueryResult<R>> {
    const parameters = toParameters(sql, params);
    const out = await this.call(
      () =>
        this.client.send(
          new ExecuteStatementCommand({
            resourceArn: this.options.resourceArn,
            secretArn: this.options.secretArn,
            database: this.options.database,
            sql: utcTimestampParams(sql, parameters),
            parameters: parameters.length > 0 ? parameters : undefined,
            transactionId,
            includeResultMetadata: true,
            resultSetOptions: { decimalReturnType: 'STRING', longReturnType: 'STRING' },
          }),
        ),
      // Inside a transaction the cluster is already awake; a retry there could not be told apart from a
      // statement that did run.
      transactionId === undefined,
    );
    return decodeResult<R>(out);
  }

  /**
   * Maps errors. Outside a transaction (`outsideTransaction`), retries DatabaseResumingException (which
   * the SDK does not retry) within its budget, and an authentication failure a few times.
   */
  private async call<T>(send: () => Promise<T>, outsideTransaction: boolean): Promise<T> {
    const maxWaitMs = this.options.resumeRetry?.maxWaitMs ?? 45_000;
    const initialDelayMs = this.options.resumeRetry?.initialDelayMs ?? 250;
    const authRetries = this.options.authRetry?.retries ?? 3;
    const authDelayMs = this.options.authRetry?.initialDelayMs ?? 500;
    const deadline = Date.now() + maxWaitMs;
    let authFailures = 0;
    for (let attempt = 0; ; attempt++) {
      try {
        return await send();
      } catch (err) {
        const remaining = deadline - Date.now();
        if (errorName(err) === 'DatabaseResumingException' && outsideTransaction && remaining > 0) {
          // Exponential backoff with jitter, capped at 5 s per wait and at the remaining budget.
          const delay = Math.min(5000, initialDelayMs * 2 ** attempt) * (0.5 + Math.random() / 2);
          await new Promise((r) => setTimeout(r, Math.min(delay, remaining)));
          continue;
        }
        if (isAuthenticationFailure(err) && outsideTransaction && authFailures < authRetries) {
          await new Promise((r) => setTimeout(r, authDelayMs * 2 ** authFailures));
          authFailures++;
          continue;
        }
        throw mapDataApiError(err);
      }
    }
  }
}

/** The 1 MiB response limit; the service fails the call with one of these messages. */
const RESPONSE_TOO_LARGE = /response size limit|response exceeded size limit/i;

function errorName(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null ? (err as { name?: string }).name : undefined;
}

/** Turns a Data API error into what the port promises: `DatabaseError` with the SQLSTATE for SQL errors. */
export function mapDataApiError(err: unknown): unknown {
  const message = err instanceof Error ? err.message : String(err);
  const sqlState = /SQLState: ([0-9A-Z]{5})/.exec(message)?.[1];
  if (!sqlState && RESPONSE_TOO_LARGE.test(message)) {
    return new Error(
      `the result exceeded the Data API's 1 MiB response limit; select fewer rows or columns per statement (${message})`,
      { cause: err },
    );
  }
  if (errorName(err) === 'DatabaseErrorException')
    return new DatabaseError(message, sqlState, { cause: err });
  return err;
}

/** `2026-11-28T22:05:01.123Z` → `2026-11-28 22:05:01.123`, the TIMESTAMP hint's format (UTC). */
export function toDataApiTimestamp(d: Date): string {
  if (Number.isNaN(d.getTime())) throw new Error('an invalid Date cannot be sent as a SQL parameter');
  return d.toISOString().replace('T', ' ').replace('Z', '');
}

/**
 * A TIMESTAMP-hinted parameter is a `timestamp` (no time zone) holding UTC wall-clock time; where the
 * statement compares or stores it as a `timestamptz`, PostgreSQL would read it in the session's time
 * zone. Each such placeholder becomes `(:name AT TIME ZONE 'UTC')`, an instant whatever the session's
 * zone (the stack also runs sessions in UTC: infra/database.ts). A Date is thus an instant, as with
 * node-postgres; stored into a `timestamp` column (the project has none) it becomes the session zone's
 * wall-clock time, which the stack's sessions make UTC.
 */
function utcTimestampParams(sql: string, parameters: SqlParameter[]): string {
  const timestamps = new Set(parameters.filter((p) => p.typeHint === 'TIMESTAMP').map((p) => p.name));
  if (timestamps.size === 0) return sql;
  return rewritePlaceholders(sql, (name) =>
    timestamps.has(name) ? `(:${name} AT TIME ZONE 'UTC')` : undefined,
  );
}

/** The statement's parameters, in placeholder order; only the names the statement uses. */
function toParameters(sql: string, params: SqlParams | undefined): SqlParameter[] {
  const { names } = parseNamedParams(sql);
  return names.map((name) => {
    if (!params || !(name in params)) throw new Error(`SQL parameter :${name} was not given`);
    return { name, ...toField(name, params[name] as SqlValue) };
  });
}

const HINTS = { uuid: 'UUID', json: 'JSON', decimal: 'DECIMAL', date: 'DATE' } as const;

function toField(name: string, v: SqlValue | undefined): Pick<SqlParameter, 'value' | 'typeHint'> {
  if (v === null || v === undefined) return { value: { isNull: true } };
  if (v instanceof Date) return { value: { stringValue: toDataApiTimestamp(v) }, typeHint: 'TIMESTAMP' };
  if (isTypedValue(v)) {
    if (v.text === null) return { value: { isNull: true } };
    return { value: { stringValue: v.text }, typeHint: HINTS[v.sqlType] };
  }
  switch (typeof v) {
    case 'string':
      return { value: { stringValue: v } };
    case 'boolean':
      return { value: { booleanValue: v } };
    case 'bigint':
      // longValue travels as a JSON number and would lose digits past 2^53; an exact decimal string
      // does not. DECIMAL (numeric) assigns to bigint columns and compares exactly with them; an
      // unhinted string would be varchar, which PostgreSQL will not assign to a bigint column.
      return { value: { stringValue: v.toString() }, typeHint: 'DECIMAL' };
    case 'number':
      // Only safe integers are exact as a JSON number; anything else goes as a double, as pg would bind it.
      return Number.isSafeInteger(v) ? { value: { longValue: v } } : { value: { doubleValue: v } };
  }
  throw new Error(`SQL parameter :${name} has an unsupported value ${String(v)}`);
}

function decodeResult<R extends Row>(out: ExecuteStatementCommandOutput): QueryResult<R> {
  const columns = out.columnMetadata ?? [];
  if (columns.length === 0) {
    // No result set: DML without RETURNING, DDL (or, defensively, rows without metadata).
    if ((out.records?.length ?? 0) > 0)
      throw new Error('the Data API returned records without column metadata');
    return { rows: [], rowCount: out.numberOfRecordsUpdated ?? 0 };
  }
  const labels = columns.map((c, i) => c.label ?? c.name ?? `?column?${i}`);
  const rows = (out.records ?? []).map((record) => {
    const row: Row = {};
    for (let i = 0; i < labels.length; i++)
      row[labels[i]!] = decodeField(record[i] ?? { isNull: true }, columns[i]!);
    return row as R;
  });
  return { rows, rowCount: rows.length };
}

/** One value, decoded by its column's PostgreSQL type to what node-postgres returns. */
export function decodeField(field: Field, column: Pick<ColumnMetadata, 'typeName'>): unknown {
  if (field.isNull) return null;
  const type = (column.typeName ?? '').toLowerCase();
  if (field.arrayValue !== undefined) return decodeArray(field.arrayValue, type.replace(/^_/, ''));
  if (field.blobValue !== undefined) return Buffer.from(field.blobValue);
  if (field.booleanValue !== undefined) return field.booleanValue;
  if (field.doubleValue !== undefined) {
    if (type === 'numeric' || type === 'decimal') return String(field.doubleValue);
    return type === 'float4' ? shortestFloat4(field.doubleValue) : field.doubleValue;
  }
  const raw = field.stringValue ?? (field.longValue !== undefined ? String(field.longValue) : undefined);
  if (raw === undefined) return null;
  return decodeScalar(raw, type);
}

function decodeScalar(raw: string, type: string): unknown {
  switch (type) {
    case 'int8':
    case 'bigint':
    case 'bigserial':
      return BigInt(raw);
    case 'int2':
    case 'int4':
    case 'serial':
    case 'smallserial':
    case 'oid':
      return Number(raw);
    case 'float4':
      return shortestFloat4(Number(raw));
    case 'float8':
      return Number(raw);
    case 'bool':
      return raw === 'true' || raw === 't';
    case 'timestamptz':
    case 'timestamp':
      // The Data API returns both without an offset: timestamptz always in UTC, and the project stores
      // UTC in timestamp columns.
      return new Date(`${raw.replace(' ', 'T')}Z`);
    case 'json':
    case 'jsonb':
      return JSON.parse(raw);
    default:
      // text, varchar, uuid, enums, date (YYYY-MM-DD), numeric (exact, as a string)
      return raw;
  }
}

/**
 * A 1-D array, decoded element-wise the way node-postgres's default array parsers do (the Row contract
 * covers scalars; arrays follow pg so both drivers still agree): int2/int4/float/numeric elements are
 * numbers, int8 elements strings, bool booleans, json parsed, everything else text.
 */
function decodeArray(value: ArrayValue, elementType: string): unknown[] {
  if (value.arrayValues) return value.arrayValues.map((v) => (v ? decodeArray(v, elementType) : null));
  if (value.booleanValues) return value.booleanValues;
  if (value.doubleValues) return value.doubleValues;
  const raw = value.stringValues ?? value.longValues?.map(String) ?? [];
  return raw.map((s) => {
    if (s === null || s === undefined) return null;
    switch (elementType) {
      case 'int2':
      case 'int4':
      case 'float4':
      case 'float8':
      case 'numeric':
        return Number(s);
      case 'bool':
        return s === 'true' || s === 't';
      case 'json':
      case 'jsonb':
        return JSON.parse(s);
      case 'timestamp':
      case 'timestamptz':
        return new Date(`${s.replace(' ', 'T')}Z`);
      default:
        return s;
    }
  });
}

/**
 * PostgreSQL prints a real (float4) as the shortest decimal that reads back as the same float4; a value
 * widened to a double (1.2999999523…) is brought back to that form (1.3), which is what pg returns.
 */
function shortestFloat4(v: number): number {
  if (!Number.isFinite(v)) return v;
  const target = Math.fround(v);
  for (let digits = 1; digits <= 9; digits++) {
    const candidate = Number(target.toPrecision(digits));
    if (Math.fround(candidate) === target) return candidate;
  }
  return target;
}

/**
 * The driver configured from the environment the Lambda functions and `lana-jobs --data-api` use:
 * DATA_API_RESOURCE_ARN, DATA_API_SECRET_ARN, DATA_API_DATABASE, and DATA_API_ENDPOINT (tests only: the
 * local Data API fixture).
 */
export function dataApiDatabaseFromEnv(
  env: Record<string, string | undefined>,
  client?: RDSDataClient,
): DataApiDatabase {
  const required = ['DATA_API_RESOURCE_ARN', 'DATA_API_SECRET_ARN', 'DATA_API_DATABASE'] as const;
  const missing = required.filter((k) => !env[k]);
  if (missing.length > 0) {
    throw new Error(`the RDS Data API needs ${missing.join(', ')} (missing from the environment)`);
  }
  return new DataApiDatabase({
    resourceArn: env.DATA_API_RESOURCE_ARN!,
    secretArn: env.DATA_API_SECRET_ARN!,
    database: env.DATA_API_DATABASE!,
    client,
    clientConfig: env.DATA_API_ENDPOINT ? { endpoint: env.DATA_API_ENDPOINT } : undefined,
  });
}
