import {
  BeginTransactionCommand,
  type ColumnMetadata,
  CommitTransactionCommand,
  ExecuteStatementCommand,
  type ExecuteStatementCommandOutput,
  type Field,
  RDSDataClient,
  RollbackTransactionCommand,
  type SqlParameter,
} from '@aws-sdk/client-rds-data';
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

/**
 * The database port over the RDS Data API (Aurora PostgreSQL, HTTPS, no connections to manage), for the
 * Lambda functions and `jobs --data-api`. It hides the Data API's differences from node-postgres:
 * - parameters travel with type hints (UUID, JSON, TIMESTAMP in its `YYYY-MM-DD HH:MM:SS.FFF` UTC form,
 *   DECIMAL for bigints and exact decimals, DATE); there are no array parameters (the SQL unpacks JSON);
 * - results are decoded by column type to exactly what the pg driver returns: timestamps arrive without an
 *   offset and are UTC, int8 and numeric arrive as strings (asked for as strings so nothing loses
 *   precision), json arrives as text;
 * - SQL errors (`DatabaseErrorException`) become `DatabaseError` with their SQLSTATE;
 *   `DatabaseResumingException` (a paused Serverless v2 cluster waking up) is retried with backoff.
 */
export interface DataApiOptions {
  resourceArn: string;
  secretArn: string;
  database: string;
  client?: RDSDataClient;
  /** How long to keep retrying while the cluster resumes. Default 45 s. */
  resumeBudgetMs?: number;
}

const MAX_RESPONSE_BYTES_TEXT = '1 MiB';

export class DataApiDatabase implements Database {
  readonly driverName = 'data-api' as const;
  private readonly client: RDSDataClient;
  private readonly ownsClient: boolean;

  constructor(private readonly options: DataApiOptions) {
    this.ownsClient = !options.client;
    // The Data API cancels statements after 45 s; an SDK timeout shorter than that plus a retry could
    // apply a statement twice, so the request timeout stays above it.
    this.client = options.client ?? new RDSDataClient({ requestHandler: { requestTimeout: 60_000 } });
  }

  query<R extends Row = Row>(sql: string, params?: SqlParams): Promise<QueryResult<R>> {
    return this.execute<R>(sql, params, undefined);
  }

  async transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T> {
    const { transactionId } = await this.call(
      () =>
        this.client.send(
          new BeginTransactionCommand({
            resourceArn: this.options.resourceArn,
            secretArn: this.options.secretArn,
            database: this.options.database,
          }),
        ),
      true,
    );
    if (!transactionId) throw new Error('the Data API began a transaction without an id');
    // Statements run one at a time: the Data API rejects a second concurrent call on one transaction.
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
      await this.client
        .send(
          new RollbackTransactionCommand({
            resourceArn: this.options.resourceArn,
            secretArn: this.options.secretArn,
            transactionId,
          }),
        )
        .catch(() => {}); // an aborted transaction may already be gone
      throw err;
    }
    await this.call(
      () =>
        this.client.send(
          new CommitTransactionCommand({
            resourceArn: this.options.resourceArn,
            secretArn: this.options.secretArn,
            transactionId,
          }),
        ),
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
  ) {
    const parameters = toParameters(sql, params);
    const out = await this.call(
      () =>
        this.client.send(
          new ExecuteStatementCommand({
            resourceArn: this.options.resourceArn,
            secretArn: this.options.secretArn,
            database: this.options.database,
            sql,
            parameters,
            transactionId,
            includeResultMetadata: true,
            resultSetOptions: { decimalReturnType: 'STRING', longReturnType: 'STRING' },
          }),
        ),
      // Only a statement outside a transaction may be retried while the cluster resumes.
      transactionId === undefined,
    );
    return decodeResult<R>(out);
  }

  /** Maps errors; retries DatabaseResumingException (which the SDK does not retry) within the budget. */
  private async call<T>(send: () => Promise<T>, retryResuming: boolean): Promise<T> {
    const deadline = Date.now() + (this.options.resumeBudgetMs ?? 45_000);
    for (let attempt = 0; ; attempt++) {
      try {
        return await send();
      } catch (err) {
        const name = (err as { name?: string }).name;
        if (name === 'DatabaseResumingException' && retryResuming && Date.now() < deadline) {
          const delay = Math.min(5000, 250 * 2 ** attempt) * (0.5 + Math.random() / 2);
          await new Promise((r) => setTimeout(r, Math.min(delay, Math.max(0, deadline - Date.now()))));
          continue;
        }
        throw mapDataApiError(err);
      }
    }
  }
}

export function mapDataApiError(err: unknown): unknown {
  const e = err as { name?: string; message?: string };
  const message = e.message ?? String(err);
  if (/response size|exceeds the (?:maximum )?size|1 ?MiB|1MB/i.test(message)) {
    return new Error(
      `the result exceeded the Data API's ${MAX_RESPONSE_BYTES_TEXT} response limit; fetch fewer rows per statement (${message})`,
      { cause: err },
    );
  }
  if (e.name === 'DatabaseErrorException') {
    const code = /SQLState: ([0-9A-Z]{5})/.exec(message)?.[1];
    return new DatabaseError(message, code, { cause: err });
  }
  return err;
}

/** `2026-11-28T22:05:01.123Z` → `2026-11-28 22:05:01.123`, the TIMESTAMP hint's format (UTC). */
export function toDataApiTimestamp(d: Date): string {
  return d.toISOString().replace('T', ' ').replace('Z', '');
}

function toParameters(sql: string, params: SqlParams | undefined): SqlParameter[] {
  const { names } = parseNamedParams(sql);
  return names.map((name) => {
    if (!params || !(name in params)) throw new Error(`SQL parameter :${name} was not given`);
    return { name, ...toField(params[name] as SqlValue) };
  });
}

function toField(v: SqlValue): Pick<SqlParameter, 'value' | 'typeHint'> {
  if (v === null || v === undefined) return { value: { isNull: true } };
  if (v instanceof Date) return { value: { stringValue: toDataApiTimestamp(v) }, typeHint: 'TIMESTAMP' };
  if (isTypedValue(v)) {
    if (v.text === null) return { value: { isNull: true } };
    const hint = { uuid: 'UUID', json: 'JSON', decimal: 'DECIMAL', date: 'DATE' } as const;
    return { value: { stringValue: v.text }, typeHint: hint[v.sqlType] };
  }
  switch (typeof v) {
    case 'string':
      return { value: { stringValue: v } };
    case 'boolean':
      return { value: { booleanValue: v } };
    case 'bigint':
      // An exact decimal: a JS number would lose precision past 2^53.
      return { value: { stringValue: v.toString() }, typeHint: 'DECIMAL' };
    case 'number':
      return Number.isInteger(v) ? { value: { longValue: v } } : { value: { doubleValue: v } };
  }
  throw new Error(`unsupported SQL parameter value ${String(v)}`);
}

function decodeResult<R extends Row>(out: ExecuteStatementCommandOutput): QueryResult<R> {
  const columns = out.columnMetadata ?? [];
  if (columns.length === 0) return { rows: [], rowCount: out.numberOfRecordsUpdated ?? 0 };
  const rows = (out.records ?? []).map((record) => {
    const row: Row = {};
    record.forEach((field, i) => {
      const column = columns[i]!;
      row[column.label ?? column.name ?? `column${i}`] = decodeField(field, column);
    });
    return row as R;
  });
  return { rows, rowCount: rows.length };
}

/** One value, decoded by its column's PostgreSQL type to what node-postgres returns. */
export function decodeField(field: Field, column: Pick<ColumnMetadata, 'typeName'>): unknown {
  if (field.isNull) return null;
  const type = (column.typeName ?? '').toLowerCase();
  if (field.booleanValue !== undefined) return field.booleanValue;
  if (field.doubleValue !== undefined) return field.doubleValue;
  if (field.blobValue !== undefined) return Buffer.from(field.blobValue);
  if (field.arrayValue !== undefined) return field.arrayValue;
  const raw = field.stringValue ?? (field.longValue !== undefined ? String(field.longValue) : undefined);
  if (raw === undefined) return null;
  switch (type) {
    case 'int8':
    case 'bigint':
    case 'bigserial':
      return BigInt(raw);
    case 'int2':
    case 'int4':
    case 'serial':
    case 'oid':
      return Number(raw);
    case 'float4':
    case 'float8':
      return Number(raw);
    case 'bool':
      return raw === 'true' || raw === 't';
    case 'timestamptz':
    case 'timestamp':
      // The Data API returns both without an offset; the values are UTC.
      return new Date(`${raw.replace(' ', 'T')}Z`);
    case 'json':
    case 'jsonb':
      return JSON.parse(raw);
    default:
      // text, varchar, uuid, date (YYYY-MM-DD), numeric (exact, as a string)
      return raw;
  }
}

/** The driver configured from the environment the Lambda functions and `jobs --data-api` use. */
export function dataApiDatabaseFromEnv(
  env: Record<string, string | undefined>,
  client?: RDSDataClient,
): DataApiDatabase {
  const missing = ['DATA_API_RESOURCE_ARN', 'DATA_API_SECRET_ARN', 'DATA_API_DATABASE'].filter(
    (k) => !env[k],
  );
  if (missing.length > 0) throw new Error(`the RDS Data API needs ${missing.join(', ')}`);
  return new DataApiDatabase({
    resourceArn: env.DATA_API_RESOURCE_ARN!,
    secretArn: env.DATA_API_SECRET_ARN!,
    database: env.DATA_API_DATABASE!,
    client:
      client ?? (env.DATA_API_ENDPOINT ? new RDSDataClient({ endpoint: env.DATA_API_ENDPOINT }) : undefined),
  });
}
