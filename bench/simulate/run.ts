import os from 'node:os';
import { openBenchServer } from '../support.js';
import { type ScenarioResult, scenarios, simulate } from './simulate.js';

/**
 * `npm run simulate [-- --json] [-- --seed N] [-- --scale F] [-- --only S1,S3] [-- --latency-ms 20]`: the
 * AWS path in virtual time (bench/simulate/simulate.ts), each scenario on a fresh database of the server
 * named by DATABASE_URL (else an embedded PostgreSQL). `--scale` shrinks the scenarios (CI runs 0.02).
 */
const args = process.argv.slice(2);
const value = (name: string) => {
  const i = args.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i < 0) return undefined;
  return args[i]!.includes('=') ? args[i]!.split('=')[1] : args[i + 1];
};
const json = args.includes('--json');
const seed = Number(value('--seed') ?? Math.floor(Math.random() * 2 ** 31));
const scale = Number(value('--scale') ?? 1);
const latency = Number(value('--latency-ms') ?? 20);
const only = value('--only')?.split(',');

const server = await openBenchServer();
const results: (ScenarioResult & { realSeconds: number })[] = [];
try {
  for (const scenario of scenarios(scale)) {
    if (only && !only.some((o) => scenario.name.startsWith(o))) continue;
    const { db, url, drop } = await server.freshDatabase(20);
    const started = performance.now();
    try {
      const name = new URL(url).pathname.slice(1);
      const r = await simulate(scenario, { pg: db, url, name }, { seed, dataApiLatencyMs: latency });
      const realSeconds = +((performance.now() - started) / 1000).toFixed(1);
      results.push({ ...r, realSeconds });
      if (!json) console.log(JSON.stringify({ ...r, realSeconds }));
    } finally {
      await drop();
    }
  }
} finally {
  await server.stop();
}
const summary = {
  seed,
  scale,
  dataApiLatencyMs: latency,
  machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version },
  database: server.description,
  scenarios: results,
};
if (json) console.log(JSON.stringify(summary, null, 2));
process.exit(0);
