import pg from 'pg';
import { z } from 'zod';
import { JobTypeRegistry } from '../../shared/jobs/registry.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { dataApiDriverOver, startDataApiFixture } from '../../test/support/data-api-fixture.js';
import { type BenchServer, latencySummary, median } from '../support.js';

/** Two no-op types for the AWS path: `busy`, and `free` beside it. `limit` undefined: no limits. */
function registry(limits: { busy?: number; free?: number }) {
  const type = (name: string, concurrency?: number) => ({
    type: name,
    description: 'does nothing',
    schema: z.object({ i: z.number().int() }),
    ...(concurrency === undefined ? {} : { concurrency }),
    execute: async (): Promise<undefined> => undefined,
  });
  return new JobTypeRegistry().register(type('busy', limits.busy)).register(type('free', limits.free));
}

export interface SlotsResult {
  executors: number;
  /** Executors looping complete-and-claim on one type through the Data API, claims per second (medians). */
  claimsPerSecond: { limited: number; unlimited: number; ratio: number };
  /** fetch-ready's all-types claim of the free type, with and without a stalled holder of the busy type's slots. */
  freeTypeClaim: {
    withoutStall: { p50Ms: number; p99Ms: number };
    withStall: { p50Ms: number; p99Ms: number };
    p99Ratio: number;
  };
}

/**
 * The AWS path's limited claims, through the real Data API driver and the local Data API fixture.
 *
 * Claims: `executors` executors each loop an executor's life on one type: complete the attempt and claim
 * the type's next job in one statement (`completeAndClaimNext`), then begin it (`startAttempt`). The same
 * statements with the type limited to `executors` (every claim takes and frees a slot row) and with no
 * limit (the limits document is `{}`: the same claim function, no slot), in alternating rounds.
 *
 * Stall: fetch-ready's all-types claim (claims of 30, dispatch leases) of the `free` type's due jobs while
 * the `busy` type, due jobs waiting, has all its slots taken: alternating blocks where running jobs hold
 * them (committed) and where a session holds them in an open transaction after its claim (a stalled
 * claimer). Both types are limited, as the shipped ones are.
 */
export async function slots(
  server: BenchServer,
  executors = 64,
  jobsPerRound = 1_000,
  rounds = 3,
): Promise<SlotsResult> {
  const { db: pgDb, url, drop } = await server.freshDatabase();
  const fixture = await startDataApiFixture(url, { poolSize: executors });
  const database = new URL(url).pathname.slice(1);
  const dataApi = dataApiDriverOver(fixture, database);
  try {
    const claimsPerSecond = async (limit: number | undefined) => {
      const tracker = new JobTracker({ db: dataApi, registry: registry({ busy: limit }) });
      await new JobTracker({ db: pgDb, registry: registry({}) }).enqueueMany(
        Array.from({ length: jobsPerRound }, (_, i) => ({ type: 'busy' as const, payload: { i } })),
      );
      let claims = 0;
      const executor = async () => {
        let [job] = await tracker.fetchReady(1, { jobType: 'busy' });
        while (job) {
          claims++;
          await tracker.startAttempt(job.id, job.attempts);
          const { next } = await tracker.completeAndClaimNext({ id: job.id, attempt: job.attempts }, 'busy');
          job = next ?? undefined;
        }
      };
      const t = performance.now();
      await Promise.all(Array.from({ length: executors }, executor));
      const seconds = (performance.now() - t) / 1000;
      const left = await pgDb.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM jobs WHERE status <> 'completed'",
      );
      if (claims !== jobsPerRound || left.rows[0]!.n !== 0)
        throw new Error(`slots: ${claims} claims of ${jobsPerRound} jobs, ${left.rows[0]!.n} not completed`);
      return claims / seconds;
    };
    const limited: number[] = [];
    const unlimited: number[] = [];
    for (let r = 0; r < rounds; r++) {
      limited.push(await claimsPerSecond(executors));
      unlimited.push(await claimsPerSecond(undefined));
    }

    const limits = { busy: 3, free: 30 };
    const fetchReady = new JobTracker({ db: dataApi, registry: registry(limits) });
    const seed = new JobTracker({ db: pgDb, registry: registry({}) });
    await seed.enqueueMany(
      Array.from({ length: 100 }, (_, i) => ({ type: 'busy' as const, payload: { i } })),
    );
    await fetchReady.fetchReady(1, { jobType: 'free' }); // makes the slot rows
    const withoutStall: number[] = [];
    const withStall: number[] = [];
    const complete = (jobs: { id: string; attempts: number }[]) =>
      fetchReady.completeMany(jobs.map((j) => ({ id: j.id, attempt: j.attempts })));
    const sample = async (into: number[]) => {
      await seed.enqueueMany(
        Array.from({ length: 30 }, (_, i) => ({ type: 'free' as const, payload: { i } })),
      );
      const t = performance.now();
      const claimed = await fetchReady.fetchReady(30);
      into.push(performance.now() - t);
      if (claimed.some((j) => j.jobType !== 'free') || claimed.length === 0)
        throw new Error('slots: the stalled type was claimed, or the free one was not');
      await complete(claimed);
    };
    for (let block = 0; block < 10; block++) {
      // The busy type at its limit, its slots held by running jobs: the claim passes over it.
      const running = await fetchReady.fetchReady(limits.busy, { jobType: 'busy' });
      for (let i = 0; i < 20; i++) await sample(withoutStall);
      await complete(running);
      // The same, its slots held by a claimer that stalls with its transaction open.
      const holder = new pg.Client({ connectionString: url });
      await holder.connect();
      try {
        await holder.query('BEGIN');
        await holder.query(
          `SELECT count(*) FROM lana_jobs_claim_slotted($1::jsonb, 'busy', 100, now(), false, 90, NULL, NULL, NULL, NULL, NULL)`,
          [JSON.stringify(limits)],
        );
        for (let i = 0; i < 20; i++) await sample(withStall);
      } finally {
        await holder.query('ROLLBACK');
        await holder.end();
      }
    }
    const a = latencySummary(withoutStall);
    const b = latencySummary(withStall);
    return {
      executors,
      claimsPerSecond: {
        limited: Math.round(median(limited)),
        unlimited: Math.round(median(unlimited)),
        ratio: +(median(limited) / median(unlimited)).toFixed(2),
      },
      freeTypeClaim: {
        withoutStall: { p50Ms: a.p50Ms, p99Ms: a.p99Ms },
        withStall: { p50Ms: b.p50Ms, p99Ms: b.p99Ms },
        p99Ratio: +(b.p99Ms / a.p99Ms).toFixed(2),
      },
    };
  } finally {
    await dataApi.close();
    await fixture.close();
    await drop();
  }
}
