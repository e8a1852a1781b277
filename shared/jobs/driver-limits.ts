import { randomUUID } from 'node:crypto';
import { type Database, type SqlValue, type TypedValue, uuid } from '../db/port.js';

/**
 * What a database driver's limits mean for the job statements, decided here once: the tracker's parts ask
 * this, never the driver's figures.
 *
 * The RDS Data API answers at most 64 KB per row and 1 MiB per call, takes at most 4 MiB per request, and
 * its client may send a statement again after it committed; node-postgres has none of these limits.
 */
export interface DriverLimits {
  /**
   * Claims answer with one JSON document (a third of the decoding cost of a row of columns per job), or,
   * under a per-row limit, with a row per job.
   */
  readonly claimsAsDocument: boolean;
  /** Completions recorded per statement (the answer lists each applied one in a single row). */
  readonly completionsPerStatement: number;
  /** Whole job rows looked up per statement (the answer's size limit). */
  readonly jobRowsPerStatement: number;
  /** Whether the driver owns sessions that can be warmed ahead (`warmUpInsertSql`). */
  readonly hasOwnSessions: boolean;
  /** A bulk insert's rows as JSON documents, one per request: one, unless the request size is limited. */
  insertDocuments(rows: readonly object[]): TypedValue[];
  /**
   * A token for one call of a statement the driver may send again after it committed, so that the second
   * run recognises the first one's work; NULL for drivers that never do.
   */
  callToken(): SqlValue;
}

/**
 * 30 whole rows with 16 KiB payloads, every character escaped, stay under the Data API's 1 MiB answer
 * (the same bound as its claims, see `MAX_PAYLOAD_BYTES`).
 */
const JOB_ROWS_UNDER_AN_ANSWER_LIMIT = 30;
/** 300 × (id, type of at most 100 characters, duration) stays under a 64 KB row. */
const COMPLETIONS_UNDER_A_ROW_LIMIT = 300;
/**
 * Room kept in a size-limited request for everything but the jobs' document: the statement's text, the
 * other parameters and the request's own envelope.
 */
const REQUEST_OVERHEAD_BYTES = 64 * 1024;

export function driverLimits(db: Database): DriverLimits {
  const rowLimited = db.maxRowBytes !== undefined;
  const requestLimit = db.maxRequestBytes;
  return {
    claimsAsDocument: !rowLimited,
    completionsPerStatement: rowLimited ? COMPLETIONS_UNDER_A_ROW_LIMIT : Number.POSITIVE_INFINITY,
    jobRowsPerStatement: rowLimited ? JOB_ROWS_UNDER_AN_ANSWER_LIMIT : Number.POSITIVE_INFINITY,
    hasOwnSessions: db.driverName === 'pg',
    insertDocuments: (rows) =>
      requestLimit === undefined
        ? [{ sqlType: 'json', text: JSON.stringify(rows) }]
        : documentsUnder(rows, requestLimit - REQUEST_OVERHEAD_BYTES),
    callToken: () => (db.resendsStatements ? uuid(randomUUID()) : null),
  };
}

/** Bytes of `text` once written as a JSON string inside a request body (quotes and escapes included). */
function escapedBytes(text: string): number {
  return Buffer.byteLength(JSON.stringify(text), 'utf8');
}

/**
 * The rows as JSON documents of at most `budget` bytes each once escaped into a request (the Data API
 * sends the document as a JSON string; 10,000 jobs with large payloads can need 40 MiB), whole rows only.
 */
function documentsUnder(rows: readonly object[], budget: number): TypedValue[] {
  const whole = JSON.stringify(rows);
  // Escaping never shortens a text, and UTF-8 has at least a byte per UTF-16 unit: a document longer than
  // the budget must be split, without escaping the whole of it first (10,000 large payloads: ~1 GB).
  if (whole.length <= budget && escapedBytes(whole) <= budget) return [{ sqlType: 'json', text: whole }];
  const documents: TypedValue[] = [];
  let current: string[] = [];
  let bytes = 2; // the brackets
  for (const row of rows) {
    const text = JSON.stringify(row);
    const rowBytes = escapedBytes(text) + 1; // and its comma
    if (current.length > 0 && bytes + rowBytes > budget) {
      documents.push({ sqlType: 'json', text: `[${current.join(',')}]` });
      current = [];
      bytes = 2;
    }
    current.push(text);
    bytes += rowBytes;
  }
  documents.push({ sqlType: 'json', text: `[${current.join(',')}]` });
  return documents;
}
