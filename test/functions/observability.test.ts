import { ExecuteStatementCommand, RDSDataClient } from '@aws-sdk/client-rds-data';
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { createObservability, withObservability } from '../../functions/lib/powertools.js';
import { redactErrorsForTracing, redactForTrace, redactHandlerErrors } from '../../functions/lib/tracing.js';
import { type DataApiFixture, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

const context = {
  functionName: 'lana-jobs-test',
  functionVersion: '$LATEST',
  invokedFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:lana-jobs-test',
  memoryLimitInMB: '512',
  awsRequestId: 'req',
  getRemainingTimeInMillis: () => 60_000,
} as unknown as Context;

const UNIQUE_VIOLATION =
  'ERROR: duplicate key value violates unique constraint "accounts_email_key"\n  Detail: Key (email)=(ada@lana.example) already exists.; SQLState: 23505';

test('logger keys appended for one invocation do not label the next one', async () => {
  const o = createObservability('test');
  const lines: string[] = [];
  const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  });
  try {
    const handler = withObservability(async (event: { jobId?: string }) => {
      if (event.jobId) o.logger.appendKeys({ jobId: event.jobId });
      o.logger.info('ran');
      return 'ok';
    }, o);
    await handler({ jobId: 'job-1' }, context);
    await handler({}, context);
  } finally {
    write.mockRestore();
  }
  const ran = lines.flatMap((l) => l.split('\n')).filter((l) => l.includes('"ran"'));
  expect(ran).toHaveLength(2);
  expect(JSON.parse(ran[0]!).jobId).toBe('job-1');
  expect(JSON.parse(ran[1]!).jobId).toBeUndefined();
});

test('redaction keeps the error and its SQLSTATE, drops the key values', () => {
  const redacted = redactForTrace(UNIQUE_VIOLATION);
  expect(redacted).not.toContain('ada@lana.example');
  expect(redacted).toContain('accounts_email_key');
  expect(redacted).toMatch(/SQLState: 23505$/);
  expect(
    redactForTrace('ERROR: invalid input syntax for type uuid: "secret-value"; SQLState: 22P02'),
  ).not.toContain('secret-value');
  expect(
    redactForTrace('new row violates check constraint\n  Failing row contains (1, ada, 5).'),
  ).not.toContain('ada');
});

describe('an SDK client traced with redacted errors', () => {
  let t: TestDatabase;
  let fixture: DataApiFixture;
  beforeAll(async () => {
    t = await createTestDatabase({ migrate: false });
    fixture = await startDataApiFixture(t.url);
  });
  afterAll(async () => {
    await fixture?.close();
    await t?.drop();
  });

  test('the tracing step sees the redacted error; the caller gets the original', async () => {
    const client = new RDSDataClient({
      endpoint: fixture.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
      maxAttempts: 1,
    });
    redactErrorsForTracing(client);
    // The X-Ray SDK's middleware sits in the `build` step: a probe there sees what it would record.
    const seenByTracing: string[] = [];
    client.middlewareStack.add(
      (next) => async (args) => {
        try {
          return await next(args);
        } catch (err) {
          seenByTracing.push(`${(err as Error).name}: ${(err as Error).message}`);
          throw err;
        }
      },
      { step: 'build', name: 'probe' },
    );
    fixture.injectFault({ error: 'DatabaseErrorException', message: UNIQUE_VIOLATION });
    const err = await client
      .send(
        new ExecuteStatementCommand({
          resourceArn: 'arn:aws:rds:us-east-1:123456789012:cluster:c',
          secretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:s',
          database: t.name,
          sql: 'SELECT 1',
        }),
      )
      .then(
        () => undefined,
        (e: unknown) => e as Error,
      );
    client.destroy();
    expect(seenByTracing).toHaveLength(1);
    expect(seenByTracing[0]).toMatch(/^DatabaseErrorException: /);
    expect(seenByTracing[0]).not.toContain('ada@lana.example');
    expect(err?.name).toBe('DatabaseErrorException');
    expect(err?.message).toBe(UNIQUE_VIOLATION);
  });
});

test("a handler's error reaches the tracer's middleware redacted and Lambda as thrown", async () => {
  const redact = redactHandlerErrors();
  const seenByTracer: string[] = [];
  const thrown = Object.assign(new Error(UNIQUE_VIOLATION), { code: '23505' });
  const handler = middy(async () => {
    throw thrown;
  })
    .use(redact.outer)
    // Where captureLambdaHandler sits in withObservability: between the two.
    .use({
      onError: async (request) => {
        seenByTracer.push(request.error!.message);
      },
    })
    .use(redact.inner);
  await expect(handler({}, context)).rejects.toBe(thrown);
  expect(seenByTracer).toHaveLength(1);
  expect(seenByTracer[0]).not.toContain('ada@lana.example');
  expect(seenByTracer[0]).toContain('SQLState: 23505');
});
