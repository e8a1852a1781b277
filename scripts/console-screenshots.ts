/**
 * `npm run docs:screenshots`: screenshots of the console's overview and a job page for docs/console/.
 * Runs against a scratch database it creates (and drops) on the PostgreSQL server of DATABASE_URL
 * (default: the local server at 127.0.0.1:5432), filled by the tracker with a small realistic history.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import pg from 'pg';
import { startConsole } from '../shared/console/server.js';
import { migrate } from '../shared/db/migrate.js';
import { PgDatabase } from '../shared/db/pg-driver.js';
import { createJobTypeRegistry } from '../shared/job-types/index.js';
import { JobTracker } from '../shared/jobs/tracker.js';
import { schedules } from '../shared/schedules/definitions.js';
import { launchChromium } from '../test/support/chromium.js';

const adminUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const name = `lana_console_screens_${randomBytes(4).toString('hex')}`;
const outDir = new URL('../docs/console/', import.meta.url).pathname;

async function admin(statement: string): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    await c.query(statement);
  } finally {
    await c.end();
  }
}

await admin(`CREATE DATABASE ${name}`);
const url = new URL(adminUrl);
url.pathname = `/${name}`;
const db = new PgDatabase({ connectionString: url.toString(), max: 4 });
try {
  await migrate(db);
  const tracker = new JobTracker({ db, registry: createJobTypeRegistry() });
  const day = new Date().toISOString().slice(0, 10);
  const enqueue = (type: string, payload: unknown, n: number) =>
    tracker.enqueueUntyped(Array.from({ length: n }, () => ({ type, payload })));
  await enqueue('sync', {}, 40);
  await enqueue(
    'notification',
    { kind: 'payment-reminder', facilityId: '0193a1b2-0000-7000-8000-000000000001', dueDate: day },
    25,
  );
  await enqueue('interest-accrual', { date: day }, 8);
  // Run most of them: completions with varied durations, some failures.
  const claimed = await tracker.fetchReady(65);
  let i = 0;
  for (const job of claimed) {
    i++;
    if (i % 9 === 0) {
      await tracker.markFailed(job.id, job.attempts, 'price feed answered 503 Service Unavailable');
    } else if (i % 23 === 0) {
      await tracker.markFailed(job.id, job.attempts, 'facility not found', { permanent: true });
    } else {
      await tracker.markCompleted(job.id, job.attempts, { durationMs: 40 + ((i * 37) % 400) });
    }
  }
  await enqueue('approval-processing', { processId: '0193a1b2-0000-7000-8000-0000000000aa' }, 3);

  const failed = await tracker.listJobsPage({ status: 'failed' }, { limit: 1 });
  const example = failed.jobs[0] ?? (await tracker.listJobsPage({}, { limit: 1 })).jobs[0]!;
  const running = await startConsole({ tracker, schedules, port: 0, description: 'docs screenshot data' });
  const chromium = await launchChromium({ width: 1280, height: 860 });
  try {
    const page = await chromium.browser.newPage();
    mkdirSync(outDir, { recursive: true });
    await page.goto(running.url);
    await page.screenshot({ path: `${outDir}overview.png`, fullPage: true });
    await page.goto(new URL(`/jobs/${example.id}`, running.url).toString());
    await page.screenshot({ path: `${outDir}job.png`, fullPage: true });
    console.log(`wrote ${outDir}overview.png and ${outDir}job.png`);
  } finally {
    await chromium.close();
    await running.close();
  }
} finally {
  await db.close();
  await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
}
