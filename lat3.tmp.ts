import pg from 'pg';
import { openBenchServer, sleep, latencySummary } from './bench/support.js';
import { newJobId } from './shared/jobs/ids.js';
import { z } from 'zod';
import { JobTypeRegistry } from './shared/jobs/registry.js';
import { JobTracker } from './shared/jobs/tracker.js';
const server = await openBenchServer();
const { db, url, drop } = await server.freshDatabase();
const c = new pg.Client({ connectionString: url }); await c.connect();
await c.query('CREATE TABLE floor_jobs (id bigserial PRIMARY KEY, state text NOT NULL)');
await c.query('CREATE TABLE jobs_nobrin (LIKE jobs INCLUDING ALL)');
await c.query('DROP INDEX IF EXISTS jobs_nobrin_completed_at_idx');
const idx = await c.query("select indexname from pg_indexes where tablename='jobs_nobrin'"); console.log(idx.rows.map(r=>r.indexname).join(','));
for (const r of idx.rows) if (r.indexname.includes('completed')) await c.query(`DROP INDEX ${r.indexname}`);
const registry = new JobTypeRegistry().register({ type: 'noop', description: 'x', schema: z.object({ i: z.number() }), execute: async () => undefined });
const tracker = new JobTracker({ db, registry });
let startedAt = 0;
tracker.attachEagerStarter({ reserve: () => ({ start: () => { startedAt = performance.now(); }, cancel: () => {} }) });
const res: Record<string, number[]> = { floor: [], jobsMinimal: [], jobsNoBrin: [], eager: [] };
const ins = (table: string) => c.query({ name: table, text: `INSERT INTO ${table} (id, job_type, payload, status, attempts, started_at, lease_expires_at) VALUES ($1, 'noop', '{"i":1}', 'running', 1, now(), now() + interval '15 minutes') RETURNING id`, values: [newJobId()] });
for (let i = 0; i < 300; i++) {
  await sleep(20); let t = performance.now(); await c.query({ name: 'f', text: "INSERT INTO floor_jobs (state) VALUES ('running') RETURNING id" }); res.floor!.push(performance.now() - t);
  await sleep(20); t = performance.now(); await ins('jobs'); res.jobsMinimal!.push(performance.now() - t);
  await sleep(20); t = performance.now(); await ins('jobs_nobrin'); res.jobsNoBrin!.push(performance.now() - t);
  await sleep(20); t = performance.now(); await tracker.enqueue({ type: 'noop', payload: { i } }); res.eager!.push(startedAt - t);
}
for (const [k, v] of Object.entries(res)) console.log(k.padEnd(14), JSON.stringify(latencySummary(v)));
await c.end(); await drop(); await server.stop();
