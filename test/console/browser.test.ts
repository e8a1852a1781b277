import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type RunningConsole, startConsole } from '../../shared/console/server.js';
import { createJobTypeRegistry, type LendingTracker } from '../../shared/job-types/index.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { schedules } from '../../shared/schedules/definitions.js';
import { launchChromium } from '../support/chromium.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * The console in a real browser (Debian's chromium when present, else the one inside the `@sparticuz/chromium`
 * npm package; driven by playwright-core) against a real database:
 * what an operator sees and does, and what the database holds afterwards.
 */

let t: TestDatabase;
let tracker: LendingTracker;
let consoleServer: RunningConsole;
let chromium: Awaited<ReturnType<typeof launchChromium>>;
let page: Page;

async function statusOf(id: string): Promise<string> {
  const res = await t.db.query<{ status: string }>('SELECT status FROM jobs WHERE id = CAST(:id AS uuid)', {
    id,
  });
  return res.rows[0]!.status;
}

/** A job as a worker would have left it after its last attempt failed. */
async function failedJob(type: 'sync' | 'maintenance', error: string, key?: string): Promise<string> {
  const [r] = await tracker.enqueueUntyped([{ type, payload: {}, idempotencyKey: key }]);
  await t.db.query(
    "UPDATE jobs SET status = 'failed', attempts = 1, completed_at = now(), last_error = :error WHERE id = CAST(:id AS uuid)",
    { id: r!.job.id, error },
  );
  return r!.job.id;
}

beforeAll(async () => {
  t = await createTestDatabase();
  tracker = new JobTracker({ db: t.db, registry: createJobTypeRegistry() });
  consoleServer = await startConsole({ tracker, schedules, port: 0, refreshMs: 300 });
  chromium = await launchChromium();
  page = await chromium.browser.newPage();
  page.on('dialog', (d) => void d.dismiss());
}, 60_000);

afterAll(async () => {
  await chromium?.close();
  await consoleServer?.close();
  await t?.drop();
});

const url = (path: string) => new URL(path, consoleServer.url).toString();

describe('the console in a browser', () => {
  test('with no Debian chromium, the browser inside the npm package runs the console', async () => {
    const packaged = await launchChromium(undefined, '/nonexistent/usr/bin/chromium');
    try {
      expect(packaged.choice.source).toBe('npm-package');
      expect(packaged.choice.executablePath).not.toBe('/usr/bin/chromium');
      const p = await packaged.browser.newPage();
      await p.goto(url('/'));
      expect(await p.locator('h1').first().textContent()).toBeTruthy();
      expect(await p.locator('#counts').count()).toBe(1);
    } finally {
      await packaged.close();
    }
  });

  test('the overview refreshes itself and shows a job enqueued after it loaded', async () => {
    await page.goto(url('/'));
    await expect(page.locator('#counts').textContent()).resolves.toContain('no jobs');
    await tracker.enqueueUntyped([{ type: 'sync', payload: {} }]);
    await page.waitForSelector('#counts tr[data-type="sync"] td[data-status="pending"] >> text=1', {
      timeout: 5000,
    });
    expect(await page.locator('#queue-depth').textContent()).toBe('1');
  });

  test('a failed job retried from its page is pending in the database', async () => {
    const id = await failedJob('sync', 'price feed down');
    await page.goto(url(`/jobs/${id}`));
    expect(await page.locator('dd[data-field="status"]').textContent()).toBe('failed');
    await page.click('#retry');
    await page.waitForSelector('#notice');
    expect(await page.locator('dd[data-field="status"]').textContent()).toBe('pending');
    expect(await statusOf(id)).toBe('pending');
  });

  test('a bulk retry changes exactly the filtered jobs, after showing their count', async () => {
    const chosen = [await failedJob('maintenance', 'disk full'), await failedJob('maintenance', 'disk full')];
    const others = [await failedJob('sync', 'disk full')];
    const [pendingOne] = await tracker.enqueueUntyped([{ type: 'maintenance', payload: {} }]);
    await page.goto(url('/jobs?type=maintenance&status=failed'));
    expect(await page.locator('table.jobs tbody tr').count()).toBe(2);
    await page.click('text=Retry all matching…');
    expect(await page.locator('#bulk-count').textContent()).toContain('retry 2 failed or cancelled job(s)');
    await page.click('#confirm');
    expect(await page.locator('#bulk-result').textContent()).toContain('Retried 2 job(s)');
    for (const id of chosen) expect(await statusOf(id)).toBe('pending');
    for (const id of others) expect(await statusOf(id)).toBe('failed');
    expect(await statusOf(pendingOne!.job.id)).toBe('pending');
  });

  test('payloads, keys and errors holding HTML stay inert text', async () => {
    const evil = `<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'"&`;
    const [r] = await tracker.enqueueUntyped([{ type: 'sync', payload: {}, idempotencyKey: evil }]);
    const id = r!.job.id;
    await t.db.query(
      `UPDATE jobs SET status = 'failed', completed_at = now(), last_error = :error,
         payload = jsonb_build_object('note', CAST(:evil AS text)) WHERE id = CAST(:id AS uuid)`,
      { id, error: `<svg onload="window.__xss=3"></svg>${evil}`, evil },
    );
    for (const path of [
      `/jobs/${id}`,
      '/jobs?status=failed',
      `/jobs?key=${encodeURIComponent(evil)}`,
      '/failures',
    ]) {
      await page.goto(url(path));
      expect(await page.evaluate(() => (globalThis as { __xss?: number }).__xss)).toBeUndefined();
      expect(await page.locator('main script, main img, main svg:not(.chart svg)').count()).toBe(0);
    }
    await page.goto(url(`/jobs/${id}`));
    expect(await page.locator('dd[data-field="idempotency key"]').textContent()).toBe(evil);
    expect(await page.locator('pre.payload').textContent()).toContain('<script>window.__xss=1</script>');
  });

  test('an enqueue form with a bad payload shows the error and writes nothing', async () => {
    const before = await t.db.query<{ n: number }>('SELECT count(*)::integer AS n FROM jobs');
    await page.goto(url('/enqueue?type=approval-processing'));
    await page.fill('input[name="payload.processId"]', 'not-a-uuid');
    await page.click('#enqueue');
    expect(await page.locator('#error').textContent()).toContain('payload.processId');
    const after = await t.db.query<{ n: number }>('SELECT count(*)::integer AS n FROM jobs');
    expect(after.rows[0]!.n).toBe(before.rows[0]!.n);
    // The same form with a good payload enqueues.
    await page.fill('input[name="payload.processId"]', '0193a1b2-0000-7000-8000-000000000001');
    await page.click('#enqueue');
    expect(await page.locator('dd[data-field="type"]').textContent()).toBe('approval-processing');
  });

  test('a key of the maximum length and a long error leave every column on the page', async () => {
    await failedJob('sync', `timeout talking to the price feed ${'x'.repeat(2000)}`, 'K'.repeat(255));
    await failedJob('sync', 'short', '\u202Eexe.txt');
    await page.goto(url('/jobs?status=failed'));
    const viewport = page.viewportSize()!;
    for (const header of ['created (UTC)', 'scheduled (UTC)', 'last error']) {
      const box = (await page.locator('table.jobs th', { hasText: header }).boundingBox())!;
      expect(box.x + box.width, header).toBeLessThanOrEqual(viewport.width);
    }
    // The direction override is shown as a marker; the text after it reads left to right.
    const marked = page.locator('table.jobs td.key', { hasText: 'exe.txt' });
    expect(await marked.locator('.ctl').textContent()).toBe('⟨U+202E⟩');
    const bidi = await marked.evaluate(
      (td) => td.ownerDocument.defaultView!.getComputedStyle(td.querySelector('bdi')!).unicodeBidi,
    );
    expect(bidi).toBe('isolate');
  });

  test('a POST without the console token is refused and changes nothing', async () => {
    const id = await failedJob('sync', 'x');
    const res = await fetch(url(`/jobs/${id}/retry`), { method: 'POST', body: new URLSearchParams({}) });
    expect(res.status).toBe(403);
    expect(await statusOf(id)).toBe('failed');
  });
});
