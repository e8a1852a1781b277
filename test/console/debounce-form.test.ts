import { afterAll, beforeAll, beforeEach, expect, test } from 'vitest';
import { createConsoleApp } from '../../shared/console/server.js';
import { createJobTypeRegistry, type LendingTracker } from '../../shared/job-types/index.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { schedules } from '../../shared/schedules/definitions.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/** The console's enqueue form debounces as the CLI and application code do, by the same rules. */

let t: TestDatabase;
let tracker: LendingTracker;
let app: ReturnType<typeof createConsoleApp>;
let csrf: string;
beforeAll(async () => {
  t = await createTestDatabase();
  tracker = new JobTracker({ db: t.db, registry: createJobTypeRegistry() });
  app = createConsoleApp({ tracker, schedules });
  const form = await (await app.request('/enqueue?type=sync')).text();
  expect(form).toContain('name="debounceKey"');
  csrf = /name="_csrf" value="([^"]+)"/.exec(form)![1]!;
});
afterAll(async () => t?.drop());
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs');
});

const post = (fields: Record<string, string>) =>
  app.request('/enqueue', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', host: 'localhost' },
    body: new URLSearchParams({ _csrf: csrf, type: 'sync', ...fields }).toString(),
  });

const jobCount = async () =>
  (await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs')).rows[0]!.n;

test('two posts with one debounce key make one job; the second says it joined it', async () => {
  const first = await post({ debounceKey: 'revalue', debounceWindow: '30' });
  expect(first.status).toBe(303);
  expect(first.headers.get('location')).toMatch(/\?done=enqueued$/);
  const second = await post({ debounceKey: 'revalue', debounceWindow: '30', debounceMaxWait: '600' });
  expect(second.headers.get('location')).toBe(
    first.headers.get('location')!.replace('enqueued', 'debounced'),
  );
  expect(await jobCount()).toBe(1);
  const page = await (await app.request(second.headers.get('location')!)).text();
  expect(page).toContain('Joined the pending job with this debounce key');
});

test.each([
  [{ debounceKey: 'k' }, /debounce window must be an integer from 1 to 86400 seconds \(got &quot;&quot;\)/],
  [{ debounceKey: 'k', debounceWindow: '1.5' }, /debounce window must be an integer/],
  [{ debounceKey: 'k', debounceWindow: '60', debounceMaxWait: '30' }, /debounce maximum wait must be/],
  [{ debounceWindow: '60' }, /a debounce window or maximum wait needs a debounce key/],
  [{ debounceKey: 'k', debounceWindow: '60', key: 'idem' }, /takes no idempotency key/],
])('bad debounce fields %j: 400 with one error, nothing written', async (fields, message) => {
  const res = await post(fields);
  expect(res.status).toBe(400);
  const errors = [...(await res.text()).matchAll(/class="error"[^>]*>([^<]*)</g)].map((m) => m[1]);
  expect(errors).toHaveLength(1);
  expect(errors[0]).toMatch(message);
  expect(await jobCount()).toBe(0);
});
