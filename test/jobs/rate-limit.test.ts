import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { z } from 'zod';
import { rateLimitEnvironment, StackSettingError } from '../../infra/settings.js';
import type { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import type { Database } from '../../shared/db/port.js';
import { ManualClock } from '../../shared/jobs/clock.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { JobTypeRegistry, rateLimitsFromText } from '../../shared/jobs/registry.js';
import { JobTracker, plannedStart, RATE_START_LEAD_MS } from '../../shared/jobs/tracker.js';
import { Worker } from '../../shared/runtime/worker.js';
import { type DataApiFixture, dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * Rate limits per type (migration 0015, `job_rate_slots`): at most `limit` of a type's jobs claimed in any
 * `perSeconds` window, by every claim and every claimer together; a job over the rate stays due with no
 * attempt counted.
 */
const schema = z.object({ n: z.number().int() });
const starts: number[] = [];
const registry = (concurrency?: number) =>
  new JobTypeRegistry()
    .register({
      type: 'mail',
      description: 'rate-limited',
      schema,
      concurrency,
      rateLimit: { limit: 3, perSeconds: 2 },
      execute: async () => {
        starts.push(Date.now());
        return undefined;
      },
    })
    .register({ type: 'sync', description: 'free', schema, execute: async () => undefined });
type Tracker = JobTracker<ReturnType<typeof registry>['schemas']>;

let t: TestDatabase;
let fixture: DataApiFixture;
let dataApi: DataApiDatabase;
let clock: ManualClock;

beforeAll(async () => {
  t = await createTestDatabase({ poolSize: 8 });
  fixture = await startDataApiFixture(t.url);
  dataApi = dataApiDriverOver(fixture, t.name);
});
afterAll(async () => {
  await dataApi?.close();
  await fixture?.close();
  await t?.drop();
});
beforeEach(async () => {
  await t.db.query('TRUNCATE jobs, job_execution_records, job_rate_slots CASCADE');
  clock = new ManualClock('2026-06-01T00:00:00Z');
  starts.length = 0;
});

async function enqueue(tracker: Tracker, type: 'mail' | 'sync', n: number) {
  await tracker.enqueueMany(Array.from({ length: n }, (_, i) => ({ type, payload: { n: i } })));
}

async function waitingUncounted() {
  const r = await t.db.query<{ n: number }>(
    "SELECT count(*)::integer AS n FROM jobs WHERE job_type = 'mail' AND status = 'pending' AND attempts = 0",
  );
  return r.rows[0]!.n;
}

test('a rate out of range is refused when the type is registered', () => {
  const bad = (rateLimit: { limit: number; perSeconds: number }) => () =>
    new JobTypeRegistry().register({
      type: 'x',
      description: 'd',
      schema,
      rateLimit,
      execute: async () => undefined,
    });
  expect(bad({ limit: 0, perSeconds: 1 })).toThrow(/rateLimit.limit must be an integer from 1 to 10000/);
  expect(bad({ limit: 1.5, perSeconds: 1 })).toThrow(/rateLimit.limit/);
  expect(bad({ limit: 5, perSeconds: 0 })).toThrow(/rateLimit.perSeconds must be an integer from 1 to 86400/);
});

describe.each([
  ['node-postgres', 'no concurrency limit', () => t.db as Database, undefined],
  ['Data API', 'no concurrency limit', () => dataApi as Database, undefined],
  ['node-postgres', 'a concurrency limit', () => t.db as Database, 10],
  ['Data API', 'a concurrency limit', () => dataApi as Database, 10],
])('the rate holds for every claim (%s, %s)', (_driver, _limits, db, concurrency) => {
  const trackerOver = () => new JobTracker({ db: db(), registry: registry(concurrency), clock }) as Tracker;

  test('at most `limit` claimed per window; the rest wait uncounted, and go as the window moves', async () => {
    const tracker = trackerOver();
    await enqueue(tracker, 'mail', 10);
    await enqueue(tracker, 'sync', 4);
    const first = await tracker.fetchReady(20);
    expect(first.filter((j) => j.jobType === 'mail')).toHaveLength(3);
    expect(first.filter((j) => j.jobType === 'sync')).toHaveLength(4);
    expect(await tracker.fetchReady(20)).toEqual([]);
    expect(await tracker.fetchReady(20, { jobType: 'mail' })).toEqual([]);
    expect(await waitingUncounted()).toBe(7);
    clock.advance(1_999);
    expect(await tracker.fetchReady(20)).toEqual([]);
    clock.advance(1);
    expect(await tracker.fetchReady(20)).toHaveLength(3);
    expect(await waitingUncounted()).toBe(4);
  });

  test("an executor's next job and concurrent claimers share the same rate", async () => {
    const tracker = trackerOver();
    await enqueue(tracker, 'mail', 12);
    const [one] = await tracker.fetchReady(1, { jobType: 'mail' });
    const claims = await Promise.all([tracker.fetchReady(5), tracker.fetchReady(5), tracker.fetchReady(5)]);
    expect(claims.flat()).toHaveLength(2);
    const next = await tracker.completeAndClaimNext({ id: one!.id, attempt: one!.attempts }, 'mail');
    expect(next).toMatchObject({ completed: true, next: null });
    clock.advance(2_000);
    const again = await tracker.completeAndClaimNext({ id: claims.flat()[0]!.id, attempt: 1 }, 'mail');
    expect(again.next).not.toBeNull();
  });
});

test('local workers together start at most `limit` in any window, and keep to the rate', async () => {
  const trackers = [0, 1].map(() => new JobTracker({ db: t.db, registry: registry(10) }) as Tracker);
  await enqueue(trackers[0]!, 'mail', 9);
  const workers = trackers.map(
    (tracker) =>
      new Worker({
        tracker,
        dispatcher: new JobDispatcher(tracker.registry, {}),
        concurrency: 5,
        listen: (onNotify) => t.db.listen('lana_jobs', onNotify),
      }),
  );
  const begun = Date.now();
  await Promise.all(workers.map((w) => w.start()));
  try {
    await expect.poll(() => starts.length, { timeout: 10_000, interval: 50 }).toBe(9);
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
  }
  // 9 jobs at 3 per 2 s: three windows, so the last starts 4 s after the first, and not much later.
  const sorted = [...starts].sort((a, b) => a - b);
  // The rate is kept on the claims' time; an executor starts a few milliseconds after its job's claim,
  // later on a loaded machine, so the starts are held to the window less that delay.
  for (let i = 3; i < sorted.length; i++) expect(sorted[i]! - sorted[i - 3]!).toBeGreaterThanOrEqual(1_900);
  expect(sorted[8]! - begun).toBeLessThan(5_500);
});

test('jobs enqueued one at a time beside the worker keep the rate too: no eager start passes it by', async () => {
  // An eager start inserts the job already running and takes no rate slot, so a rate-limited type (like
  // one with a key) always goes through a claim; once the worker holds a slot of it, each enqueue would
  // otherwise start at once.
  const tracker = new JobTracker({ db: t.db, registry: registry(10) }) as Tracker;
  const worker = new Worker({
    tracker,
    dispatcher: new JobDispatcher(tracker.registry, {}),
    listen: (onNotify) => t.db.listen('lana_jobs', onNotify),
  });
  await worker.start();
  try {
    for (let i = 0; i < 6; i++) {
      await tracker.enqueue({ type: 'mail', payload: { n: i } });
      await new Promise((r) => setTimeout(r, 30));
    }
    await expect.poll(() => starts.length, { timeout: 5_000, interval: 20 }).toBe(3);
    // The rest wait for the next window (2 s after the first claim), uncounted.
    await new Promise((r) => setTimeout(r, 500));
    expect(starts).toHaveLength(3);
    expect(await waitingUncounted()).toBe(3);
  } finally {
    await worker.stop();
  }
});

test("a stack's rate for a type without one of its own also stops its eager start", async () => {
  const tracker = new JobTracker({
    db: t.db,
    registry: registry(10),
    rateLimitOverrides: rateLimitsFromText('sync=1/60'),
  }) as Tracker;
  const syncStarts: number[] = [];
  const worker = new Worker({
    tracker,
    dispatcher: new JobDispatcher(tracker.registry, {}),
    listen: (onNotify) => t.db.listen('lana_jobs', onNotify),
    onAttemptRecorded: (e) => {
      if (e.job.jobType === 'sync') syncStarts.push(Date.now());
    },
  });
  await worker.start();
  try {
    for (let i = 0; i < 3; i++) {
      await tracker.enqueue({ type: 'sync', payload: { n: i } });
      await new Promise((r) => setTimeout(r, 30));
    }
    await expect.poll(() => syncStarts.length, { timeout: 5_000, interval: 20 }).toBe(1);
    await new Promise((r) => setTimeout(r, 500));
    expect(syncStarts).toHaveLength(1);
  } finally {
    await worker.stop();
  }
});

describe('on AWS the starts keep the rate, not only the claims', () => {
  // `mail`: 3 per 2 s, so a start is planned at most 1 s ahead (RATE_AHEAD_SECONDS).
  const trackerOver = () => new JobTracker({ db: t.db, registry: registry(10), clock }) as Tracker;
  const at = (ms: number) => new Date(Date.parse('2026-06-01T00:00:00Z') + ms);

  test("an executor's next job is claimed ahead onto the slot free soonest, its start planned then", async () => {
    const tracker = trackerOver();
    await enqueue(tracker, 'mail', 8);
    const first = await tracker.fetchReady(10);
    expect(first).toHaveLength(3);
    clock.advance(1_500);
    // The three slots were used at 0: each frees at 2 s, within a second (and the lead) of 1.5 s.
    const next = await tracker.completeAndClaimNext({ id: first[0]!.id, attempt: 1 }, 'mail');
    expect(next.completed).toBe(true);
    expect(plannedStart(next.next!)).toEqual(at(2_000));
    expect(plannedStart((await tracker.completeAndClaimNext(null, 'mail')).next!)).toEqual(at(2_000));
    expect(plannedStart((await tracker.completeAndClaimNext(null, 'mail')).next!)).toEqual(at(2_000));
    // Every slot's next use is planned: the next one frees at 4 s, more than a second ahead.
    expect((await tracker.completeAndClaimNext(null, 'mail')).next).toBeNull();
    expect(await waitingUncounted()).toBe(2);
    // Free slots: planned a lead after the statement (its answer is back by then).
    clock.advance(3_000);
    expect(plannedStart((await tracker.completeAndClaimNext(null, 'mail')).next!)).toEqual(
      at(4_500 + RATE_START_LEAD_MS),
    );
  });

  test("an event's start takes back its claim's slot, or one free soonest, or is refused", async () => {
    const tracker = trackerOver();
    await enqueue(tracker, 'mail', 6);
    const claimed = await tracker.fetchReady(10);
    expect(claimed).toHaveLength(3);
    clock.advance(500);
    // Its claim's slot, unused since: planned a lead from now.
    const begun = await tracker.startAttempt(claimed[0]!.id, 1, { paced: true });
    expect(begun!.startedAt).toEqual(at(500 + RATE_START_LEAD_MS));
    expect(begun!.leaseExpiresAt!.getTime()).toBeGreaterThan(at(500 + RATE_START_LEAD_MS).getTime());
    // The other two slots are planned ahead by an executor before their events arrive.
    clock.advance(1_200);
    expect((await tracker.completeAndClaimNext(null, 'mail')).next).not.toBeNull();
    expect((await tracker.completeAndClaimNext(null, 'mail')).next).not.toBeNull();
    // A late event takes the slot free soonest within a second: the first one's, a window after it.
    const late = await tracker.startAttempt(claimed[1]!.id, 1, { paced: true });
    expect(late!.startedAt).toEqual(at(2_500 + RATE_START_LEAD_MS));
    // The last finds none within reach: refused, nothing begun; handed back uncounted.
    expect(await tracker.startAttempt(claimed[2]!.id, 1, { paced: true })).toBeNull();
    expect(await tracker.release([{ id: claimed[2]!.id, attempt: 1 }])).toEqual([claimed[2]!.id]);
    const back = await t.db.query<{ status: string; counted: number }>(
      'SELECT status, attempts - attempt_offset AS counted FROM jobs WHERE id = CAST(:id AS uuid)',
      { id: claimed[2]!.id },
    );
    expect(back.rows[0]).toEqual({ status: 'pending', counted: 0 });
    // A duplicate of the begun one is still refused; a renewal (not paced) of a begun attempt as before.
    expect(await tracker.startAttempt(claimed[0]!.id, 1, { paced: true })).toBeNull();
    // Every planned start of a slot is a window after its previous one.
    const stamps = await t.db.query<{ last_used_at: Date }>(
      "SELECT last_used_at FROM job_rate_slots WHERE job_type = 'mail' ORDER BY last_used_at",
    );
    expect(stamps.rows.map((r) => r.last_used_at.getTime() - at(0).getTime())).toEqual([
      2_000,
      2_000,
      2_500 + RATE_START_LEAD_MS,
    ]);
  });

  test('a job claimed ahead and handed to a new invocation starts no sooner than its plan', async () => {
    const tracker = trackerOver();
    await enqueue(tracker, 'mail', 4);
    expect(await tracker.fetchReady(3)).toHaveLength(3);
    clock.advance(1_500);
    // Claimed ahead onto a slot free at 2 s, then published (an invocation out of time hands it over).
    const { next } = await tracker.completeAndClaimNext(null, 'mail');
    expect(plannedStart(next!)).toEqual(at(2_000));
    clock.advance(100);
    const begun = await tracker.startAttempt(next!.id, next!.attempts, { paced: true });
    expect(begun!.startedAt).toEqual(at(2_000));
  });

  test('a start paced for a rate no claimer keeps (no rate slot rows) starts now', async () => {
    const claimer = trackerOver();
    await enqueue(claimer, 'sync', 1);
    const [job] = await claimer.fetchReady(1, { jobType: 'sync' });
    const starter = new JobTracker({
      db: t.db,
      registry: registry(10),
      clock,
      rateLimitOverrides: rateLimitsFromText('sync=1/60'),
    }) as Tracker;
    const begun = await starter.startAttempt(job!.id, 1, { paced: true });
    expect(begun!.startedAt).toEqual(at(0));
  });
});

describe("the stack's rate limits replace the types' own", () => {
  test('JOBS_RATE_LIMITS is read as type=limit/perSeconds; anything else is refused naming it', () => {
    expect(rateLimitsFromText('notification=20/1, mail=3/60')).toEqual({
      notification: { limit: 20, perSeconds: 1 },
      mail: { limit: 3, perSeconds: 60 },
    });
    expect(rateLimitsFromText(undefined)).toEqual({});
    expect(() => rateLimitsFromText('notification=20')).toThrow(
      /"notification=20" must read type=limit\/perSeconds/,
    );
    expect(() => rateLimitsFromText('notification=0/1')).toThrow(/limit must be an integer from 1 to 10000/);
  });

  test('the stack setting becomes the functions’ variable, checked at synth', () => {
    expect(rateLimitEnvironment(undefined)).toEqual({});
    expect(rateLimitEnvironment(40)).toEqual({ JOBS_RATE_LIMITS: 'notification=40/1' });
    expect(() => rateLimitEnvironment(2.5)).toThrow(
      /"notificationRateLimit" must be an integer from 1 to 10000/,
    );
    expect(() => rateLimitEnvironment(0)).toThrow(StackSettingError);
  });

  test('a tracker given an override claims by it', async () => {
    const tracker = new JobTracker({
      db: t.db,
      registry: registry(),
      clock,
      rateLimitOverrides: rateLimitsFromText('mail=1/60'),
    }) as Tracker;
    await enqueue(tracker, 'mail', 3);
    expect(await tracker.fetchReady(10)).toHaveLength(1);
    clock.advance(2_000);
    expect(await tracker.fetchReady(10)).toEqual([]);
    clock.advance(58_000);
    expect(await tracker.fetchReady(10)).toHaveLength(1);
  });
});
