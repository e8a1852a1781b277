import { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import { Tracer } from '@aws-lambda-powertools/tracer';
import { captureLambdaHandler } from '@aws-lambda-powertools/tracer/middleware';
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import { redactHandlerErrors } from './tracing.js';

/** Powertools utilities, one set per function (service name and namespace come from the environment). */
export interface Observability {
  logger: Logger;
  metrics: Metrics;
  tracer: Tracer;
}

/**
 * Every function shares one `service` (POWERTOOLS_SERVICE_NAME): the EMF metrics then carry the same
 * dimension set whichever function emits them, so one alarm covers all executors. `name` is the fallback
 * when the variable is unset (tests, local runs); logs tell functions apart by `function_name`.
 */
export function createObservability(name: string, options: { silent?: boolean } = {}): Observability {
  const serviceName = process.env.POWERTOOLS_SERVICE_NAME ?? name;
  return {
    logger: new Logger({ serviceName, ...(options.silent ? { logLevel: 'SILENT' as const } : {}) }),
    metrics: new Metrics({ serviceName, namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? 'LanaJobs' }),
    tracer: new Tracer({ serviceName }),
  };
}

/**
 * The middleware stack every handler gets: logger context, metrics flushed per invocation, tracing.
 * Keys a handler appends for one job (`appendKeys`) are cleared after each invocation (`resetKeys`), so
 * they never label the next one's logs; an error the handler throws reaches X-Ray redacted
 * (functions/lib/tracing.ts) and Lambda as it was.
 */
export function withObservability<E, R>(
  handler: (event: E, context: Context) => Promise<R>,
  o: Observability,
) {
  const redact = redactHandlerErrors();
  return middy(handler)
    .use(redact.outer)
    .use(captureLambdaHandler(o.tracer, { captureResponse: false }))
    .use(injectLambdaContext(o.logger, { resetKeys: true }))
    .use(logMetrics(o.metrics))
    .use(redact.inner);
}
