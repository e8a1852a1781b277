import { randomUUID } from 'node:crypto';
import http from 'node:http';
import pg from 'pg';
import { parseNamedParams } from '../../shared/db/named-params.js';
import { splitSqlScript } from '../../shared/db/sql-script.js';

/**
 * A local server speaking the RDS Data API's HTTP protocol (rest-json: POST /Execute, /BatchExecute,
 * /BeginTransaction, /CommitTransaction, /RollbackTransaction; errors as a 4xx with `x-amzn-errortype`)
 * over a real PostgreSQL, so the real `RDSDataClient` and the real Data API driver are exercised in tests.
 *
 * Faithful where the job system depends on it: `:name` parameters and type hints (as casts), `isNull`,
 * rejected array parameters, multi-statements and `schema`; records with column metadata; int8/numeric as
 * strings when asked; json and timestamps as text, timestamptz in UTC without an offset; a transaction per
 * id on one pinned connection, aborted by an SQL error, expired after 3 idle minutes, rejecting a concurrent
 * call; the 1 MiB response cap. Not modelled: `formatRecordsAs: JSON`, the 45 s statement timeout and
 * `continueAfterTimeout`, Secrets Manager and IAM (ARNs are accepted as given), SigV4 (headers ignored).
 */
export interface DataApiFixture {
  endpoint: string;
  /** Calls served, by operation. */
  counts: Record<string, number>;
  /** The next `times` calls of `operation` (any, if omitted) fail with this error. */
  injectFault(fault: {
    error: string;
    message?: string;
    times?: number;
    operation?: string;
    status?: number;
  }): void;
  clearFaults(): void;
  resetCounts(): void;
  close(): Promise<void>;
}

const MAX_RESPONSE_BYTES = 1024 * 1024;
const TRANSACTION_IDLE_MS = 3 * 60 * 1000;

type Field = {
  isNull?: boolean;
  booleanValue?: boolean;
  longValue?: number;
  doubleValue?: number;
  stringValue?: string;
  blobValue?: string;
  arrayValue?: unknown;
};
interface SqlParameter {
  name: string;
  value: Field;
  typeHint?: 'UUID' | 'JSON' | 'TIMESTAMP' | 'DECIMAL' | 'DATE' | 'TIME';
}

class ApiError extends Error {
  constructor(
    readonly type: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

const CASTS: Record<string, string> = {
  UUID: 'uuid',
  JSON: 'json',
  TIMESTAMP: 'timestamp',
  DECIMAL: 'numeric',
  DATE: 'date',
  TIME: 'time',
};

/** Type names by OID, for the column metadata (the driver decodes by typeName). */
const TYPE_NAMES: Record<number, string> = {
  16: 'bool',
  17: 'bytea',
  20: 'int8',
  21: 'int2',
  23: 'int4',
  25: 'text',
  114: 'json',
  700: 'float4',
  701: 'float8',
  1043: 'varchar',
  1082: 'date',
  1114: 'timestamp',
  1184: 'timestamptz',
  1700: 'numeric',
  2950: 'uuid',
  3802: 'jsonb',
};

const rawTypes = { getTypeParser: () => (value: string) => value } as pg.CustomTypesConfig;

export async function startDataApiFixture(connectionString: string): Promise<DataApiFixture> {
  // One pool per database named in the requests (the `database` parameter picks it, as in the Data API).
  const pools = new Map<string, pg.Pool>();
  const poolFor = (database: unknown): pg.Pool => {
    const url = new URL(connectionString);
    if (typeof database === 'string' && database) url.pathname = `/${database}`;
    const key = url.toString();
    let pool = pools.get(key);
    if (!pool) {
      pool = new pg.Pool({ connectionString: key, max: 8, types: rawTypes, options: '-c TimeZone=UTC' });
      pool.on('error', () => {});
      pools.set(key, pool);
    }
    return pool;
  };
  const transactions = new Map<string, { client: pg.PoolClient; busy: boolean; timer: NodeJS.Timeout }>();
  const counts: Record<string, number> = {};
  const faults: { error: string; message: string; times: number; operation?: string; status: number }[] = [];

  const endTransaction = async (id: string, sql: 'COMMIT' | 'ROLLBACK') => {
    const tx = transactions.get(id);
    if (!tx) throw new ApiError('NotFoundException', `Transaction ${id} is not found`, 404);
    transactions.delete(id);
    clearTimeout(tx.timer);
    try {
      await tx.client.query(sql);
    } finally {
      tx.client.release();
    }
  };

  const touch = (id: string) => {
    const tx = transactions.get(id)!;
    clearTimeout(tx.timer);
    tx.timer = setTimeout(() => void endTransaction(id, 'ROLLBACK').catch(() => {}), TRANSACTION_IDLE_MS);
    tx.timer.unref();
  };

  async function execute(body: Record<string, unknown>): Promise<unknown> {
    if (body.schema !== undefined)
      throw new ApiError('ValidationException', "The schema parameter isn't supported");
    const sql = String(body.sql ?? '');
    if (splitSqlScript(sql).length > 1)
      throw new ApiError('ValidationException', "Multistatements aren't supported.");
    const parameters = (body.parameters ?? []) as SqlParameter[];
    const parsed = parseNamedParams(sql);
    const byName = new Map(parameters.map((p) => [p.name, p]));
    const values = parsed.names.map((name) => {
      const p = byName.get(name);
      if (!p)
        throw new ApiError('DatabaseErrorException', `ERROR: no value was given for parameter :${name}`);
      if (p.value.arrayValue !== undefined)
        throw new ApiError('ValidationException', 'Array parameters are not supported.');
      const v = p.value;
      if (v.isNull) return null;
      if (v.stringValue !== undefined) return v.stringValue;
      if (v.longValue !== undefined) return v.longValue;
      if (v.doubleValue !== undefined) return v.doubleValue;
      if (v.booleanValue !== undefined) return v.booleanValue;
      if (v.blobValue !== undefined) return Buffer.from(v.blobValue, 'base64');
      throw new ApiError('ValidationException', `parameter :${name} has no value`);
    });
    // Type hints become casts on the placeholders they belong to.
    let text = parsed.positional;
    parsed.names.forEach((name, i) => {
      const hint = byName.get(name)?.typeHint;
      if (hint && CASTS[hint])
        text = text.replace(new RegExp(`\\$${i + 1}(?!\\d)`, 'g'), `($${i + 1}::${CASTS[hint]})`);
    });
    const options = (body.resultSetOptions ?? {}) as { longReturnType?: string; decimalReturnType?: string };
    const txId = body.transactionId as string | undefined;
    let client: pg.PoolClient;
    let release = true;
    if (txId) {
      const tx = transactions.get(txId);
      if (!tx) throw new ApiError('NotFoundException', `Transaction ${txId} is not found`, 404);
      if (tx.busy) throw new ApiError('DatabaseErrorException', 'Transaction is still running a query');
      tx.busy = true;
      client = tx.client;
      release = false;
    } else {
      client = await poolFor(body.database).connect();
    }
    let result: pg.QueryArrayResult;
    try {
      result = await client.query({ text, values, rowMode: 'array' });
    } catch (err) {
      const e = err as pg.DatabaseError;
      if (txId) {
        // An SQL error aborts the transaction: later calls find no transaction.
        await endTransaction(txId, 'ROLLBACK').catch(() => {});
      }
      throw new ApiError(
        'DatabaseErrorException',
        `ERROR: ${e.message}\n  Position: ${e.position ?? '?'}; SQLState: ${e.code ?? 'XX000'}`,
      );
    } finally {
      if (release) client.release();
      else if (transactions.has(txId!)) {
        transactions.get(txId!)!.busy = false;
        touch(txId!);
      }
    }
    // DML without RETURNING (and DDL) has no result set.
    if (!result.fields || result.fields.length === 0) {
      return { numberOfRecordsUpdated: result.rowCount ?? 0, generatedFields: [] };
    }
    const columnMetadata = result.fields.map((f) => ({
      name: f.name,
      label: f.name,
      typeName: TYPE_NAMES[f.dataTypeID] ?? 'text',
    }));
    const records = result.rows.map((row) =>
      (row as (string | null)[]).map((value, i) => toField(value, result.fields[i]!.dataTypeID, options)),
    );
    const response = {
      records,
      ...(body.includeResultMetadata ? { columnMetadata } : {}),
      numberOfRecordsUpdated: result.command === 'SELECT' ? 0 : (result.rowCount ?? 0),
    };
    if (Buffer.byteLength(JSON.stringify(response)) > MAX_RESPONSE_BYTES) {
      throw new ApiError(
        'DatabaseErrorException',
        'Database returned more than the allowed response size limit',
      );
    }
    return response;
  }

  function toField(
    value: string | null,
    oid: number,
    options: { longReturnType?: string; decimalReturnType?: string },
  ): Field {
    if (value === null) return { isNull: true };
    switch (oid) {
      case 16:
        return { booleanValue: value === 't' };
      case 20:
      case 21:
      case 23:
        return options.longReturnType === 'STRING' ? { stringValue: value } : { longValue: Number(value) };
      case 700:
      case 701:
        return { doubleValue: Number(value) };
      case 1700:
        return options.decimalReturnType === 'DOUBLE_OR_LONG'
          ? { doubleValue: Number(value) }
          : { stringValue: value };
      case 1184:
        // Always UTC, without the offset.
        return { stringValue: value.replace(/\+00(:00)?$/, '') };
      case 17:
        return { blobValue: Buffer.from(value.replace(/^\\x/, ''), 'hex').toString('base64') };
      default:
        return { stringValue: value };
    }
  }

  const routes: Record<string, (body: Record<string, unknown>) => Promise<unknown>> = {
    '/Execute': execute,
    '/BatchExecute': async (body) => {
      const sets = (body.parameterSets ?? [[]]) as SqlParameter[][];
      const updateResults = [];
      for (const parameters of sets) {
        await execute({ ...body, parameters });
        updateResults.push({ generatedFields: [] });
      }
      return { updateResults };
    },
    '/BeginTransaction': async (body) => {
      const client = await poolFor(body.database).connect();
      await client.query('BEGIN');
      const transactionId = randomUUID();
      transactions.set(transactionId, { client, busy: false, timer: setTimeout(() => {}, 0) });
      touch(transactionId);
      return { transactionId };
    },
    '/CommitTransaction': async (body) => {
      await endTransaction(String(body.transactionId), 'COMMIT');
      return { transactionStatus: 'Transaction Committed' };
    },
    '/RollbackTransaction': async (body) => {
      await endTransaction(String(body.transactionId), 'ROLLBACK');
      return { transactionStatus: 'Rollback Complete' };
    },
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const operation = req.url ?? '';
      counts[operation.slice(1)] = (counts[operation.slice(1)] ?? 0) + 1;
      const send = (status: number, body: unknown, errorType?: string) => {
        res.writeHead(status, {
          'content-type': 'application/json',
          ...(errorType ? { 'x-amzn-errortype': errorType } : {}),
        });
        res.end(JSON.stringify(body));
      };
      try {
        const fault = faults.find((f) => !f.operation || f.operation === operation.slice(1));
        if (fault) {
          if (--fault.times <= 0) faults.splice(faults.indexOf(fault), 1);
          throw new ApiError(fault.error, fault.message, fault.status);
        }
        const route = routes[operation];
        if (!route) throw new ApiError('NotFoundException', `unknown operation ${operation}`, 404);
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
        send(200, await route(body));
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
      }),
    clearFaults: () => {
      faults.length = 0;
    },
    resetCounts: () => {
      for (const k of Object.keys(counts)) delete counts[k];
    },
    async close() {
      for (const id of [...transactions.keys()]) await endTransaction(id, 'ROLLBACK').catch(() => {});
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      for (const pool of pools.values()) await pool.end();
    },
  };
}
