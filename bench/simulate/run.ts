import os from 'node:os';
import { openBenchServer } from '../support.js';
import { type ScenarioResult, type SimulationOptions, scenarios, simulate } from './simulate.js';

/**
 * `npm run simulate [-- --json] [-- --seed N] [-- --scale F] [-- --only S1,S3] [-- --latency-ms 20]
 * [-- --acu 4] [-- --commit-ms 2] [-- --cold-start-ms 400] [-- --reserve] [-- --model charged|legacy] [-- --compare] [-- --statements]`: the AWS
 * path in virtual time (bench/simulate/simulate.ts), each scenario on a fresh database of the server named
 * by DATABASE_URL (else an embedded PostgreSQL). `--scale` shrinks the scenarios; `--compare` runs each
 * scenario in both models (charged first, then issue 15's legacy model).
 */
const args = process.argv.slice(2);
const value = (name: string) => {
  const i = args.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i < 0) return undefined;
  return args[i]!.includes('=') ? args[i]!.split('=')[1] : args[i + 1];
};
const num = (name: string) => (value(name) === undefined ? undefined : Number(value(name)));
const json = args.includes('--json');
const seed = Number(value('--seed') ?? Math.floor(Math.random() * 2 ** 31));
const scale = Number(value('--scale') ?? 1);
const only = value('--only')?.split(',');
const modelArg = value('--model');
if (modelArg !== undefined && modelArg !== 'charged' && modelArg !== 'legacy')
  throw new Error(`--model is charged or legacy (got "${modelArg}")`);
const models: ('charged' | 'legacy')[] = args.includes('--compare')
  ? ['charged', 'legacy']
  : [modelArg ?? 'charged'];
const base: Omit<SimulationOptions, 'model'> = {
  seed,
  dataApiLatencyMs: num('--latency-ms') ?? 20,
  acu: num('--acu') ?? 4,
  commitMs: num('--commit-ms'),
  coldStartMs: num('--cold-start-ms'),
  reserveConcurrency: args.includes('--reserve') ? true : undefined,
  statements: args.includes('--statements'),
};

const server = await openBenchServer();
const results: (ScenarioResult & { realSeconds: number })[] = [];
try {
  for (const scenario of scenarios(scale)) {
    if (only && !only.some((o) => scenario.name.startsWith(o))) continue;
    for (const model of models) {
      const { db, url, drop } = await server.freshDatabase(20);
      const started = performance.now();
      try {
        const name = new URL(url).pathname.slice(1);
        const r = await simulate(scenario, { pg: db, url, name }, { ...base, model });
        const realSeconds = +((performance.now() - started) / 1000).toFixed(1);
        results.push({ ...r, realSeconds });
        if (!json) console.log(JSON.stringify({ ...r, realSeconds }));
      } finally {
        await drop();
      }
    }
  }
} finally {
  await server.stop();
}
const summary = {
  ...base,
  scale,
  machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version },
  database: server.description,
  scenarios: results,
};
if (json) console.log(JSON.stringify(summary, null, 2));
process.exit(0);
