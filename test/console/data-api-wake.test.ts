import { Writable } from 'node:stream';
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { NUDGE_WINDOW_MS } from '../../shared/aws/waker.js';
import { runConsoleCommand } from '../../shared/cli/console.js';
import { openDataApiFromEnv } from '../../shared/cli/data-api.js';
import { createJobTypeRegistry } from '../../shared/job-types/index.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { type DataApiFixture, FIXTURE_ARNS, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * `lana-jobs console --data-api` on AWS: nothing listens for the insert's NOTIFY there, so a job the
 * console makes due now (an enqueue, a retry, a resume) wakes fetch-ready at once, as the CLI does;
 * otherwise it waits up to fetch-ready's next minute.
 */
let t: TestDatabase;
let fixture: DataApiFixture;
const eventBridge = mockClient(EventBridgeClient);
const savedEnv = { ...process.env };
beforeAll(async () => {
  // The SDK clients' region and credentials (the fixture ignores the signature).
  Object.assign(process.env, {
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
  });
  t = await createTestDatabase();
  fixture = await startDataApiFixture(t.url);
});
afterAll(async () => {
  process.env = savedEnv;
  eventBridge.restore();
  await fixture?.close();
  await t?.drop();
});

function sink() {
  let text = '';
  const stream = new Writable({
    write(chunk, _enc, done) {
      text += String(chunk);
      done();
    },
  });
  return { stream, text: () => text };
}

test('with --data-api, an enqueue, a retry and a resume in the console wake fetch-ready', async () => {
  eventBridge.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: '1' }] });
  const opened = openDataApiFromEnv({
    DATA_API_RESOURCE_ARN: FIXTURE_ARNS.resourceArn,
    DATA_API_SECRET_ARN: FIXTURE_ARNS.secretArn,
    DATA_API_DATABASE: t.name,
    DATA_API_ENDPOINT: fixture.endpoint,
    AWS_REGION: 'us-east-1',
    JOBS_BUS_NAME: 'lana-jobs',
  });
  const tracker = new JobTracker({ db: opened.db, registry: createJobTypeRegistry() });
  const stdout = sink();
  const stderr = sink();
  const stop = new AbortController();
  const running = runConsoleCommand({
    tracker,
    io: { stdout: stdout.stream, stderr: stderr.stream },
    description: opened.description,
    port: 0,
    waker: opened.waker,
    stopSignal: stop.signal,
  });
  try {
    let url: string | undefined;
    for (let i = 0; i < 200 && !url; i++) {
      url = /console: (http:\S+\/) /.exec(stdout.text())?.[1];
      if (!url) await new Promise((r) => setTimeout(r, 25));
    }
    expect(url, stdout.text()).toBeDefined();
    const csrf = /name="_csrf" value="([^"]+)"/.exec(
      await (await fetch(`${url}enqueue?type=sync`)).text(),
    )![1]!;
    const post = (path: string, fields: Record<string, string> = {}) =>
      fetch(`${url}${path.slice(1)}`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ _csrf: csrf, ...fields }).toString(),
      });
    const nudges = () =>
      eventBridge
        .commandCalls(PutEventsCommand)
        .map((c) => c.args[0].input.Entries?.[0])
        .filter((e) => e?.DetailType === 'jobs.enqueued');
    // The waker coalesces a window's nudges into one: each step waits the window out first.
    const nextWindow = () => new Promise((r) => setTimeout(r, NUDGE_WINDOW_MS + 50));

    const enqueued = await post('/enqueue', { type: 'sync' });
    expect(enqueued.status).toBe(303);
    expect(nudges()).toEqual([expect.objectContaining({ EventBusName: 'lana-jobs', Source: 'lana.jobs' })]);

    // A job scheduled ahead is not due: nothing to wake for.
    const { job: ahead } = (
      await tracker.enqueueUntyped([{ type: 'sync', payload: {}, runAt: new Date(Date.now() + 3_600_000) }])
    )[0]!;
    await tracker.cancel(ahead.id);
    await nextWindow();
    expect((await post(`/jobs/${ahead.id}/retry`)).status).toBe(303);
    expect(await tracker.getJob(ahead.id)).toMatchObject({ status: 'pending' });
    expect(nudges()).toHaveLength(2);

    await tracker.pauseType('sync', { by: 'ops' });
    await nextWindow();
    expect((await post('/types/sync/resume')).status).toBe(303);
    expect(nudges()).toHaveLength(3);

    // A nudge that fails only warns: the write stands and the page answers as usual.
    eventBridge.on(PutEventsCommand).rejects(new Error('throttled'));
    await nextWindow();
    expect((await post('/enqueue', { type: 'sync' })).status).toBe(303);
    expect(stderr.text()).toMatch(
      /warning: could not wake fetch-ready \(throttled\); the job runs at its next minute/,
    );
    expect((await tracker.listJobs({ jobType: 'sync' })).length).toBe(3);
  } finally {
    stop.abort();
    await running;
    await opened.close();
  }
});
