import { EventBridgeClient, PutEventsCommand, type PutEventsCommandInput } from '@aws-sdk/client-eventbridge';
import { RDSDataClient } from '@aws-sdk/client-rds-data';
import { mockClient } from 'aws-sdk-client-mock';
import { createExecutorHandler } from '../../functions/executor/handler.js';
import { createFetchReadyHandler } from '../../functions/fetch-ready/handler.js';
import { createObservability } from '../../functions/lib/powertools.js';
import { dispatcherFor, type JobRuntime } from '../../functions/lib/runtime.js';
import { createEventBridgePublisher } from '../../shared/aws/eventbridge-publisher.js';
import { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import { createFileNotifier, createJobServices } from '../../shared/domain/index.js';
import { createJobTypeRegistry } from '../../shared/job-types/index.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { startDataApiFixture } from '../../test/support/data-api-fixture.js';
import type { BenchServer } from '../support.js';

/** List prices (us-east-1) used for the estimate. */
export const PRICES = {
  dataApiPerMillion: 0.35,
  putEventsPerMillionEntries: 1.0,
  lambdaRequestsPerMillion: 0.2,
};

export interface AwsCostResult {
  jobs: number;
  dataApiCallsPerJob: number;
  putEventsCallsPerJob: number;
  putEventsEntriesPerJob: number;
  lambdaInvocationsPerJob: number;
  /** Data API + EventBridge + Lambda requests (not Lambda duration, Aurora capacity or logs). */
  requestCostPerMillionJobsUsd: number;
}

/**
 * W5: the AWS calls the job system makes per job, counted through the real handlers: fetch-ready runs
 * until the queue is empty (claims of 30, PutEvents of 10) and every published event goes through the
 * executor handler (start, run, finish), all through the real Data API driver against the local Data API
 * fixture. Only the job system's own calls are counted: the executors' domain work uses a separate
 * connection, as its cost depends on the job type.
 */
export async function awsCost(server: BenchServer, jobs = 1000): Promise<AwsCostResult> {
  const { db: pgDb, url, drop } = await server.freshDatabase();
  const fixture = await startDataApiFixture(url);
  const eventBridge = mockClient(EventBridgeClient);
  try {
    const database = new URL(url).pathname.slice(1);
    const db = new DataApiDatabase({
      resourceArn: 'arn:aws:rds:us-east-1:123456789012:cluster:lana-jobs',
      secretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:lana-jobs',
      database,
      client: new RDSDataClient({
        endpoint: fixture.endpoint,
        region: 'us-east-1',
        credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
      }),
    });
    const registry = createJobTypeRegistry();
    const runtime: JobRuntime = { db, registry, tracker: new JobTracker({ db, registry }) };
    // Interest accrual for 1,000 distinct days of an empty book: real executor, negligible domain work.
    await new JobTracker({ db: pgDb, registry }).enqueueUntyped(
      Array.from({ length: jobs }, (_, i) => ({
        type: 'interest-accrual',
        payload: { date: new Date(Date.UTC(2020, 0, 1) + i * 86_400_000).toISOString().slice(0, 10) },
      })),
    );
    const published: unknown[] = [];
    eventBridge.on(PutEventsCommand).callsFake((input: PutEventsCommandInput) => {
      for (const e of input.Entries ?? []) published.push(JSON.parse(e.Detail!));
      return { FailedEntryCount: 0, Entries: (input.Entries ?? []).map((_, i) => ({ EventId: `e${i}` })) };
    });
    const o = createObservability('bench', { silent: true });
    const publisher = createEventBridgePublisher({
      busName: 'lana-jobs',
      client: new EventBridgeClient({ region: 'us-east-1' }),
    });
    const services = createJobServices({
      db: pgDb,
      tracker: new JobTracker({ db: pgDb, registry }),
      notifier: createFileNotifier('/dev/null'),
      priceSource: { btcUsdQuote: async () => ({ cents: 1n, pricedAt: new Date() }) },
    });
    const executor = createExecutorHandler({
      runtime,
      dispatcher: dispatcherFor(runtime, services),
      jobType: 'interest-accrual',
      o,
    });
    // As deployed: the default claim size, up to 4 claims per invocation (the stack's maxClaimsPerRun default).
    const fetchReady = createFetchReadyHandler({ runtime, publisher, o, maxClaims: 4 });
    fixture.resetCounts();
    let invocations = 0;
    let completed = 0;
    for (;;) {
      const before = published.length;
      await fetchReady({});
      invocations++;
      const batch = published.slice(before) as {
        jobId: string;
        jobType: string;
        attempt: number;
        payload: unknown;
      }[];
      if (batch.length === 0) break;
      for (const detail of batch) {
        const r = await executor({ source: 'lana.jobs', 'detail-type': 'job.ready', detail });
        invocations++;
        if (r.outcome === 'completed') completed++;
      }
    }
    if (completed !== jobs) throw new Error(`W5: ${completed} of ${jobs} jobs completed`);
    const dataApiCalls = Object.values(fixture.counts).reduce((a, b) => a + b, 0);
    const putCalls = eventBridge.commandCalls(PutEventsCommand).length;
    const perJob = (n: number) => +(n / jobs).toFixed(3);
    const cost =
      (dataApiCalls / jobs) * PRICES.dataApiPerMillion +
      (published.length / jobs) * PRICES.putEventsPerMillionEntries +
      (invocations / jobs) * PRICES.lambdaRequestsPerMillion;
    await db.close();
    return {
      jobs,
      dataApiCallsPerJob: perJob(dataApiCalls),
      putEventsCallsPerJob: perJob(putCalls),
      putEventsEntriesPerJob: perJob(published.length),
      lambdaInvocationsPerJob: perJob(invocations),
      requestCostPerMillionJobsUsd: +cost.toFixed(2),
    };
  } finally {
    eventBridge.restore();
    await fixture.close();
    await drop();
  }
}
