import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { z } from 'zod';
import type { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import type { Database } from '../../shared/db/port.js';
import { JobInputError } from '../../shared/jobs/errors.js';
import { JobTypeRegistry } from '../../shared/jobs/registry.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { type DataApiFixture, dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/** Replay with a changed payload: validated by the type's schema, the old payload kept with who changed it. */
const registry = () =>
  new JobTypeRegistry().register({
    type: 'mail',
    description: 'd',
    schema: z.object({ to: z.string().email() }),
    execute: async () => undefined,
  });
type Tracker = JobTracker<ReturnType<typeof registry>['schemas']>;

let t: TestDatabase;
let fixture: DataApiFixture;
let dataApi: DataApiDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
  fixture = await startDataApiFixture(t.url);
  dataApi = dataApiDriverOver(fixture, t.name);
});
afterAll(async () => {
  await dataApi?.close();
  await fixture?.close();
  await t?.drop();
});
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_execution_records CASCADE');
});

describe.each([
  ['node-postgres', () => t.db as Database],
  ['Data API', () => dataApi as Database],
])('retry with a new payload (%s)', (_name, db) => {
  test('the job runs again with the new payload; the old one is in its history with who changed it', async () => {
    const tracker = new JobTracker({ db: db(), registry: registry() }) as Tracker;
    const { job } = await tracker.enqueue({ type: 'mail', payload: { to: 'old@example.com' } });
    await tracker.cancel(job.id);
    const replayed = await tracker.retryWithPayload(job.id, { to: 'new@example.com' }, 'alice');
    expect(replayed).toMatchObject({ status: 'pending', payload: { to: 'new@example.com' } });
    expect(await tracker.getPayloadChanges(job.id)).toMatchObject([
      { changedBy: 'alice', previousPayload: { to: 'old@example.com' }, payload: { to: 'new@example.com' } },
    ]);
    const [claimed] = await tracker.fetchReady(1);
    expect(claimed!.payload).toEqual({ to: 'new@example.com' });

    // Purged with its job.
    await tracker.cancel(job.id);
    const later = new Date(Date.now() + 60_000);
    expect(await tracker.pruneFinished({ before: later, statuses: ['cancelled'] })).toBe(1);
    expect(await tracker.getPayloadChanges(job.id)).toEqual([]);
  });

  test('a payload failing the schema, a running job or no name: refused, nothing written', async () => {
    const tracker = new JobTracker({ db: db(), registry: registry() }) as Tracker;
    const { job } = await tracker.enqueue({ type: 'mail', payload: { to: 'old@example.com' } });
    await expect(tracker.retryWithPayload(job.id, { to: 'x' }, 'alice')).rejects.toThrow(JobInputError);
    await expect(tracker.retryWithPayload(job.id, { to: 'new@example.com' }, 'alice')).rejects.toThrow(
      /only failed or cancelled jobs can be retried/,
    );
    await tracker.cancel(job.id);
    await expect(tracker.retryWithPayload(job.id, { to: 'x' }, 'alice')).rejects.toThrow(/payload\.to/);
    await expect(tracker.retryWithPayload(job.id, { to: 'new@example.com' }, ' ')).rejects.toThrow(
      JobInputError,
    );
    expect(await tracker.getPayloadChanges(job.id)).toEqual([]);
    expect((await tracker.requireJob(job.id)).payload).toEqual({ to: 'old@example.com' });
    expect((await tracker.requireJob(job.id)).status).toBe('cancelled');
  });
});
