/**
 * The database port: the only way the core talks to PostgreSQL.
 *
 * SQL is written once, in PostgreSQL 15 syntax, with named placeholders (`:name`). Two drivers implement
 * the port: node-postgres (local runtime, CLI, tests) and the RDS Data API (Lambda). Both must accept the
 * same statements and return the same JavaScript types, so the contract tests in `test/db/` run against both.
 *
 * Rules every statement follows so that it works through the Data API too:
 * - one statement per call (no `;`-separated scripts outside migrations);
 * - no array parameters: pass a JSON document (`json(...)`) and unpack it in SQL with
 *   `jsonb_to_recordset` / `jsonb_array_elements_text`;
 * - cast parameters whose type PostgreSQL cannot infer (`CAST(:id AS uuid)`, `CAST(:at AS timestamptz)`).
 */

/** A value bound to a named placeholder. */
export type SqlValue = string | number | bigint | boolean | null | Date | TypedValue;

/**
 * A value whose PostgreSQL type must travel with it. The Data API turns the kind into a `typeHint`;
 * node-postgres sends the text form and lets the SQL cast decide.
 */
export interface TypedValue {
  readonly sqlType: 'uuid' | 'json' | 'decimal' | 'date';
  readonly text: string | null;
}

export type SqlParams = Readonly<Record<string, SqlValue>>;

/**
 * A decoded row. Column types map to JavaScript as follows, identically in every driver:
 * int2/int4 → number, int8 → bigint, numeric → string (exact), float → number, bool → boolean,
 * text/uuid → string, date → 'YYYY-MM-DD' string, timestamp/timestamptz → Date (UTC),
 * json/jsonb → parsed value, NULL → null.
 */
export type Row = Record<string, unknown>;

export interface QueryResult<R extends Row = Row> {
  rows: R[];
  /** Rows returned by a SELECT/RETURNING, or rows affected by a DML statement without RETURNING. */
  rowCount: number;
}

/** Anything that can run a statement: the database itself or an open transaction. */
export interface Queryable {
  query<R extends Row = Row>(sql: string, params?: SqlParams): Promise<QueryResult<R>>;
}

export interface Database extends Queryable {
  /**
   * Runs `work` inside one transaction: committed when it resolves, rolled back when it throws.
   * Statements inside must be issued one after another (the Data API rejects concurrent calls
   * on one transaction).
   */
  transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
  /** Which driver this is, for logs and for the few places that can use a pg-only capability. */
  readonly driverName: 'pg' | 'data-api';
  /**
   * The largest result row the driver can return (the Data API: 64 KB), or undefined for no practical
   * limit. Statements that fold many rows into one document are only used when there is none.
   */
  readonly maxRowBytes?: number;
  /**
   * The largest request the driver can send, statement and parameters together (the Data API: 4 MiB),
   * or undefined for no practical limit. A bulk enqueue over it is split into several statements run in
   * one transaction.
   */
  readonly maxRequestBytes?: number;
  /**
   * The driver may send a statement again after it committed (the Data API's client does, when an answer
   * is lost to a reset connection or a 5xx). Statements whose second run would answer differently (a
   * claim, a completion) then carry a per-call token, so the second run recognises the first one's work.
   */
  readonly resendsStatements?: boolean;
  /**
   * Has every session the driver opens from now on run `sql` once before its first use, its errors
   * ignored: a statement that pays ahead what a session's first real use would (planning against every
   * index, compiling a trigger). Drivers without sessions of their own (the Data API) have no such method.
   */
  warmSessionsWith?(sql: string): void;
}

/** A database error with the SQLSTATE code, whichever driver raised it. */
export class DatabaseError extends Error {
  override readonly name = 'DatabaseError';
  constructor(
    message: string,
    readonly code: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  get isUniqueViolation(): boolean {
    return this.code === '23505';
  }
}

export const uuid = (text: string | null): TypedValue => ({ sqlType: 'uuid', text });
export const json = (value: unknown): TypedValue => ({
  sqlType: 'json',
  text: value === null || value === undefined ? null : JSON.stringify(value),
});
export const decimal = (text: string | null): TypedValue => ({ sqlType: 'decimal', text });
/** A calendar date, `YYYY-MM-DD`. */
export const date = (text: string | null): TypedValue => ({ sqlType: 'date', text });

export function isTypedValue(v: unknown): v is TypedValue {
  return typeof v === 'object' && v !== null && !(v instanceof Date) && 'sqlType' in v;
}
