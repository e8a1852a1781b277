import type middy from '@middy/core';
import type { Observability } from './powertools.js';

/**
 * What an error shipped to X-Ray may not carry: PostgreSQL's `Detail: Key (email)=(a@b.c) already
 * exists`, `Failing row contains (…)`, and the values quoted in "invalid input syntax" messages. Traces
 * keep the error's name, its SQLSTATE and the rest of its message; logs (not traces) keep the original.
 */
export function redactForTrace(text: string): string {
  return text
    .replace(/Detail: [^\n;]*/g, 'Detail: [redacted]')
    .replace(/Key \((?:[^()]|\([^()]*\))*\)=\((?:[^()]|\([^()]*\))*\)/g, 'Key (…)=(…)')
    .replace(/Failing row contains \((?:[^()]|\([^()]*\))*\)/g, 'Failing row contains (…)')
    .replace(/(for type \w+|value too long[^:]*|invalid input value[^:]*): "[^"]*"/g, '$1: "…"');
}

const ORIGINAL = Symbol('lana.originalError');

/** A copy of `err` for the tracer: same class, name and SDK metadata, redacted message and stack. */
export function redactedCopy(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  const copy = Object.assign(Object.create(Object.getPrototypeOf(err) as object) as Error, err);
  copy.message = redactForTrace(err.message);
  copy.stack = err.stack === undefined ? undefined : redactForTrace(err.stack);
  Object.defineProperty(copy, ORIGINAL, { value: err, enumerable: false });
  return copy;
}

function original(err: unknown): unknown {
  return (typeof err === 'object' && err !== null && (err as { [ORIGINAL]?: unknown })[ORIGINAL]) || err;
}

type Next = (args: unknown) => Promise<unknown>;
type StepOptions = { step: 'initialize' | 'deserialize'; name: string; priority: 'high' };

/** What `traceClient` needs of an AWS SDK v3 client (any client's `middlewareStack` has this `add`). */
interface SdkClient {
  middlewareStack: {
    // biome-ignore lint/suspicious/noExplicitAny: each client types its middleware by its own input/output types
    add(middleware: any, options: any): void;
  };
}

/**
 * Errors reach the X-Ray middleware (the `build` step) redacted, and the caller as they were: the
 * innermost step swaps in a redacted copy that keeps the name and `$fault`/`$metadata` the SDK's retry
 * decisions read, and the outermost step swaps the original back.
 */
export function redactErrorsForTracing<C extends SdkClient>(client: C): C {
  const rethrowing = (map: (err: unknown) => unknown) => (next: Next) => async (args: unknown) => {
    try {
      return await next(args);
    } catch (err) {
      throw map(err);
    }
  };
  const inner: StepOptions = { step: 'deserialize', name: 'lanaRedactErrorsForTracing', priority: 'high' };
  const outer: StepOptions = { step: 'initialize', name: 'lanaRestoreErrorsAfterTracing', priority: 'high' };
  client.middlewareStack.add(rethrowing(redactedCopy), inner);
  client.middlewareStack.add(rethrowing(original), outer);
  return client;
}

/**
 * An SDK client traced as X-Ray subsegments (one per call), its errors redacted on the way to X-Ray.
 * Outside Lambda (tests, local runs) the tracer is disabled and only the redaction is added.
 */
export function traceClient<C extends SdkClient>(o: Observability, client: C): C {
  redactErrorsForTracing(client);
  // biome-ignore lint/suspicious/noExplicitAny: Powertools types the argument as its own client shape
  return o.tracer.captureAWSv3Client(client as any) as C;
}

/**
 * The same for errors a handler throws: the middleware registered innermost hands the tracer's
 * `captureLambdaHandler` a redacted copy, the outermost one restores the original for Lambda.
 */
export function redactHandlerErrors(): { inner: middy.MiddlewareObj; outer: middy.MiddlewareObj } {
  return {
    inner: {
      onError: async (request) => {
        request.error = redactedCopy(request.error) as Error;
      },
    },
    outer: {
      onError: async (request) => {
        request.error = original(request.error) as Error;
      },
    },
  };
}
