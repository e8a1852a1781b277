import { afterAll, beforeAll, expect, test } from 'vitest';
import { createConsoleApp } from '../../shared/console/server.js';
import { createJobTypeRegistry, type LendingTracker } from '../../shared/job-types/index.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { schedules } from '../../shared/schedules/definitions.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

let t: TestDatabase;
let tracker: LendingTracker;
beforeAll(async () => {
  t = await createTestDatabase();
  tracker = new JobTracker({ db: t.db, registry: createJobTypeRegistry() });
});
afterAll(async () => t.drop());

const post = (token: string, fields: Record<string, string> = {}) => ({
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams({ _csrf: token, ...fields }).toString(),
});

test('the types page pauses and resumes a type with the CSRF token; without it nothing changes', async () => {
  const app = createConsoleApp({ tracker, schedules });
  const page = await (await app.request('/types')).text();
  const csrf = /name="_csrf" value="([^"]+)"/.exec(page)![1]!;
  expect(page).toContain('id="pause-notification"');
  // Each type's limits, the per-key one included.
  expect(page).toContain('<tr><td>approval-processing</td><td>10 at once, 1 per facilityId</td>');

  expect((await app.request('/types/notification/pause', post('wrong', { by: 'eve' }))).status).toBe(403);
  expect(await tracker.pausedTypes()).toEqual([]);
  expect((await app.request('/types/no-such-type/pause', post(csrf, { by: 'ann' }))).status).toBe(400);
  expect((await app.request('/types/notification/pause', post(csrf, { by: '' }))).status).toBe(400);
  expect(await tracker.pausedTypes()).toEqual([]);

  const paused = await app.request(
    '/types/notification/pause',
    post(csrf, { by: 'ann', reason: 'SES down' }),
  );
  expect(paused.status).toBe(303);
  expect(await tracker.pausedTypes()).toMatchObject([
    { jobType: 'notification', pausedBy: 'ann', reason: 'SES down' },
  ]);
  const after = await (await app.request('/types?done=pause')).text();
  expect(after).toContain('id="resume-notification"');
  expect(after).toMatch(/paused<\/strong> by ann since [^<]*: SES down/);

  expect((await app.request('/types/notification/resume', post(csrf))).status).toBe(303);
  expect(await tracker.pausedTypes()).toEqual([]);
});
