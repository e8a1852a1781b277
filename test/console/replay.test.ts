import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createConsoleApp } from '../../shared/console/server.js';
import type { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import type { Database } from '../../shared/db/port.js';
import { createJobTypeRegistry, type LendingTracker } from '../../shared/job-types/index.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { schedules } from '../../shared/schedules/definitions.js';
import { type DataApiFixture, dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/** Replay with a changed payload through the console's HTTP requests: the CLI's rules, one path. */

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

// The console over either driver (`lana-jobs console` or `lana-jobs console --data-api`).
describe.each([
  ['node-postgres', () => t.db as Database],
  ['Data API', () => dataApi as Database],
])('replay in the console (%s)', (_name, db) => {
  let tracker: LendingTracker;
  let app: ReturnType<typeof createConsoleApp>;
  beforeAll(() => {
    tracker = new JobTracker({ db: db(), registry: createJobTypeRegistry() });
    app = createConsoleApp({ tracker, schedules });
  });

  const post = (fields: Record<string, string>) => ({
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', host: 'localhost' },
    body: new URLSearchParams(fields).toString(),
  });

  const FACILITY = '00000000-0000-4000-8000-000000000001';

  async function failedReminder(): Promise<string> {
    const [r] = await tracker.enqueueUntyped([
      {
        type: 'notification',
        payload: { kind: 'payment-reminder', facilityId: FACILITY, dueDate: '2026-12-02' },
      },
    ]);
    await t.db.query(
      "UPDATE jobs SET status = 'failed', attempts = 1, completed_at = now(), last_error = 'bounced' WHERE id = CAST(:id AS uuid)",
      { id: r!.job.id },
    );
    return r!.job.id;
  }

  async function state(id: string) {
    const job = await tracker.requireJob(id);
    return { status: job.status, payload: job.payload, changes: await tracker.getPayloadChanges(id) };
  }

  test("a failed job's page offers the form; the POST replays it with who changed it, the old payload kept", async () => {
    const id = await failedReminder();
    const page = await (await app.request(`/jobs/${id}`)).text();
    expect(page).toContain('id="replay-form"');
    // The form starts from the job's payload, escaped.
    expect(page).toContain('&quot;dueDate&quot;: &quot;2026-12-02&quot;');
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page)![1]!;

    const payload = JSON.stringify({ kind: 'payment-reminder', facilityId: FACILITY, dueDate: '2026-12-03' });
    const res = await app.request(`/jobs/${id}/replay`, post({ _csrf: csrf, payload, by: 'alice' }));
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe(`/jobs/${id}?done=replay`);
    expect(await state(id)).toMatchObject({
      status: 'pending',
      payload: { dueDate: '2026-12-03' },
      changes: [
        {
          changedBy: 'alice',
          previousPayload: { dueDate: '2026-12-02' },
          payload: { dueDate: '2026-12-03' },
        },
      ],
    });

    const after = await (await app.request(`/jobs/${id}?done=replay`)).text();
    expect(after).toContain('id="notice"');
    expect(after).toContain('id="payload-changes"');
    expect(after).toContain('alice');
    // A pending job is not offered the form.
    expect(after).not.toContain('id="replay-form"');
  });

  test.each([
    ['not JSON', '{"kind":', 'alice', /payload is not valid JSON/],
    ['not an object', '[1]', 'alice', /payload must be a JSON object \(got an array\)/],
    [
      'failing the schema',
      JSON.stringify({ kind: 'payment-reminder', facilityId: 'nope', dueDate: '2026-12-03' }),
      'alice',
      /facilityId/,
    ],
    [
      'a date that does not exist',
      JSON.stringify({ kind: 'payment-reminder', facilityId: FACILITY, dueDate: '2027-02-30' }),
      'alice',
      /dueDate/,
    ],
    [
      'without a name',
      JSON.stringify({ kind: 'payment-reminder', facilityId: FACILITY, dueDate: '2026-12-03' }),
      '  ',
      /who changes the payload must be 1 to 200 characters/,
    ],
  ])('a payload %s: one clear error, the form kept, nothing written', async (_what, payload, by, message) => {
    const id = await failedReminder();
    const page = await (await app.request(`/jobs/${id}`)).text();
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page)![1]!;
    const before = await state(id);
    const res = await app.request(`/jobs/${id}/replay`, post({ _csrf: csrf, payload, by }));
    expect(res.status).toBe(400);
    const body = await res.text();
    const errors = [...body.matchAll(/class="error"[^>]*>([^<]*)</g)].map((m) => m[1]);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(message);
    // What the operator typed is still in the form.
    expect(body).toContain(`id="replay-form"`);
    expect(await state(id)).toEqual(before);
    expect(before.status).toBe('failed');
  });

  test('without the CSRF token, or for a job that cannot be retried, nothing is written', async () => {
    const id = await failedReminder();
    const payload = JSON.stringify({ kind: 'payment-reminder', facilityId: FACILITY, dueDate: '2026-12-03' });
    const before = await state(id);
    expect(
      (await app.request(`/jobs/${id}/replay`, post({ _csrf: 'wrong', payload, by: 'eve' }))).status,
    ).toBe(403);
    expect(await state(id)).toEqual(before);

    const page = await (await app.request(`/jobs/${id}`)).text();
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page)![1]!;
    await tracker.retry(id);
    const pending = await state(id);
    const res = await app.request(`/jobs/${id}/replay`, post({ _csrf: csrf, payload, by: 'bob' }));
    expect(res.status).toBe(400);
    expect(await res.text()).toContain('only failed or cancelled jobs can be retried');
    expect(await state(id)).toEqual(pending);

    const unknown = '00000000-0000-4000-8000-0000000000ff';
    expect(
      (await app.request(`/jobs/${unknown}/replay`, post({ _csrf: csrf, payload, by: 'bob' }))).status,
    ).toBe(404);
  });
});
