import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { MAX_BODY_BYTES } from '../../shared/console/guard.js';
import { createConsoleApp } from '../../shared/console/server.js';
import { createJobTypeRegistry, type LendingTracker } from '../../shared/job-types/index.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { schedules } from '../../shared/schedules/definitions.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/** The console's answers to requests: refusals, limits, and what its pages offer and say. */

let t: TestDatabase;
let tracker: LendingTracker;
let app: ReturnType<typeof createConsoleApp>;
let csrf: string;

beforeAll(async () => {
  t = await createTestDatabase();
  tracker = new JobTracker({ db: t.db, registry: createJobTypeRegistry() });
  app = createConsoleApp({ tracker, schedules });
  const form = await (await app.request('http://localhost/enqueue?type=sync')).text();
  csrf = /name="_csrf" value="([^"]+)"/.exec(form)![1]!;
});
afterAll(async () => {
  await t?.drop();
});

async function jobCount(): Promise<number> {
  const r = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs');
  return r.rows[0]!.n;
}

const post = (path: string, body: string, headers: Record<string, string> = {}) =>
  app.request(`http://localhost${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', host: 'localhost', ...headers },
    body,
  });

async function failedJob(key?: string): Promise<string> {
  const [r] = await tracker.enqueueUntyped([{ type: 'sync', payload: {}, idempotencyKey: key }]);
  await t.db.query(
    "UPDATE jobs SET status = 'failed', attempts = 1, completed_at = now(), last_error = 'x' WHERE id = CAST(:id AS uuid)",
    { id: r!.job.id },
  );
  return r!.job.id;
}

describe('requests the console refuses', () => {
  test.each([
    'garbage',
    '://',
    'http//localhost',
    'localhost',
    'file:///etc/passwd',
    'data:,x',
    'javascript:alert(1)',
    'http://evil.test',
    'http://localhost:1',
    'http://[::1',
  ])('Origin %j with a valid token: 403, nothing written', async (origin) => {
    const before = await jobCount();
    const res = await post('/enqueue', new URLSearchParams({ _csrf: csrf, type: 'sync' }).toString(), {
      origin,
    });
    expect(res.status).toBe(403);
    expect(await res.text()).toContain('Nothing was changed');
    expect(await jobCount()).toBe(before);
  });

  test('the same POST from this origin is accepted', async () => {
    const res = await post('/enqueue', new URLSearchParams({ _csrf: csrf, type: 'sync' }).toString(), {
      origin: 'http://localhost',
    });
    expect(res.status).toBe(303);
  });

  test('a body declared larger than the limit is refused by its length, before it is read', async () => {
    let pulled = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled++;
        controller.enqueue(new Uint8Array(1024 * 1024).fill(97));
      },
    });
    const res = await app.request(
      new Request('http://localhost/enqueue', {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'content-length': String(10 * 1024 * 1024),
        },
        body,
        duplex: 'half',
      } as RequestInit),
    );
    expect(res.status).toBe(413);
    expect(await res.text()).toContain(`at most ${MAX_BODY_BYTES} bytes`);
    // The stream's source starts one chunk ahead; nothing past it was read.
    expect(pulled).toBeLessThanOrEqual(1);
  });

  test('a streamed body without a length is cut off at the limit (no CSRF token read, nothing parsed)', async () => {
    let pulled = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled++;
        if (pulled > 10) controller.close();
        else controller.enqueue(new Uint8Array(1024 * 1024).fill(97));
      },
    });
    const before = await jobCount();
    const res = await app.request(
      new Request('http://localhost/enqueue', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body,
        duplex: 'half',
      } as RequestInit),
    );
    expect(res.status).toBe(413);
    expect(pulled).toBeLessThan(10);
    expect(await jobCount()).toBe(before);
  });

  test('a body under the limit without a token is still refused by the CSRF check', async () => {
    const res = await post('/enqueue', `type=sync&payload=${'a'.repeat(1000)}`);
    expect(res.status).toBe(403);
  });
});

describe('what the pages offer', () => {
  const bulkLinks = async (query: string) => {
    const page = await (await app.request(`http://localhost/jobs?${query}`)).text();
    return { retry: page.includes('Retry all matching…'), cancel: page.includes('Cancel all matching…') };
  };

  test('bulk actions only where the filter lets them apply', async () => {
    expect(await bulkLinks('')).toEqual({ retry: true, cancel: true });
    expect(await bulkLinks('status=failed')).toEqual({ retry: true, cancel: false });
    expect(await bulkLinks('status=cancelled')).toEqual({ retry: true, cancel: false });
    expect(await bulkLinks('status=pending')).toEqual({ retry: false, cancel: true });
    expect(await bulkLinks('status=running')).toEqual({ retry: false, cancel: true });
    expect(await bulkLinks('status=completed')).toEqual({ retry: false, cancel: false });
  });

  test('a failed job says when it failed, not "completed at"', async () => {
    const id = await failedJob();
    const page = await (await app.request(`http://localhost/jobs/${id}`)).text();
    expect(page).toContain('<dt>failed at</dt>');
    expect(page).not.toContain('completed at');
  });

  test('the enqueue form explains its fields in words, with a max-attempts field', async () => {
    for (const type of tracker.registry.list().map((x) => x.type)) {
      const form = await (await app.request(`http://localhost/enqueue?type=${type}`)).text();
      // No schema syntax (zod's UUID pattern, a date regex) shown as a hint.
      expect(form, type).not.toMatch(/\[0-9a-fA-F\]|\^\(|\\d\{4\}/);
      expect(form, type).toContain('lower runs first');
      expect(form, type).toContain('name="maxAttempts"');
    }
    const reminders = await (await app.request('http://localhost/enqueue?type=payment-reminders')).text();
    expect(reminders).toContain('a date, YYYY-MM-DD, from 2000-01-01 to 2099-12-31; optional');
  });

  test("the max-attempts field sets the job's attempts", async () => {
    const res = await post(
      '/enqueue',
      new URLSearchParams({ _csrf: csrf, type: 'sync', maxAttempts: '3', priority: '-5' }).toString(),
    );
    expect(res.status).toBe(303);
    const id = /\/jobs\/([0-9a-f-]{36})/.exec(res.headers.get('location')!)![1]!;
    const job = await tracker.requireJob(id);
    expect(job.maxAttempts).toBe(3);
    expect(job.priority).toBe(-5);
  });

  test('a long key is cut in the list and whole on the job page; direction controls are shown, not applied', async () => {
    const long = `${'k'.repeat(250)}-tail`;
    const id = await failedJob(long);
    const list = await (await app.request('http://localhost/jobs?status=failed')).text();
    expect(list).toContain(`${'k'.repeat(60)}…`);
    expect(list).not.toContain(`${'k'.repeat(61)}<`);
    const jobPage = await (await app.request(`http://localhost/jobs/${id}`)).text();
    expect(jobPage).toContain(`<bdi dir="auto">${long}</bdi>`);

    const reversed = '\u202Eevil.exe';
    const rid = await failedJob(reversed);
    for (const path of ['/jobs?status=failed', `/jobs/${rid}`]) {
      const page = await (await app.request(`http://localhost${path}`)).text();
      expect(page, path).not.toContain('\u202E');
      expect(page, path).toContain('⟨U+202E⟩</span>evil.exe');
    }
  });
});
