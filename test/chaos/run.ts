import { runChaos } from './harness.js';

/**
 * `npm run chaos [-- --seed N --jobs N --seconds N]`: the fault-injection run at full size. Prints progress
 * on stderr and one JSON line on stdout; exits non-zero if any invariant was violated. Uses DATABASE_URL,
 * else an embedded PostgreSQL.
 */
const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
let adminUrl = process.env.DATABASE_URL;
let stop = async () => {};
if (!adminUrl) {
  const { startEmbeddedPostgres } = await import('../../shared/runtime/embedded-postgres.js');
  const server = await startEmbeddedPostgres({ dataDir: '.lana-jobs/chaos-pgdata' });
  adminUrl = server.adminUrl;
  stop = server.stop;
}
const seed = arg('seed', Math.floor(Math.random() * 2 ** 31));
process.stderr.write(`chaos: seed ${seed} (replay with --seed ${seed})\n`);
try {
  const report = await runChaos({
    adminUrl,
    seed,
    jobs: arg('jobs', 3000),
    workers: arg('workers', 3),
    lambdas: arg('lambdas', 2),
    faultSeconds: arg('seconds', 20),
    log: (line) => process.stderr.write(`chaos: ${line}\n`),
  });
  process.stdout.write(`${JSON.stringify(report)}\n`);
  const violated = Object.values(report.violations).reduce((a, b) => a + b, 0);
  process.exitCode = violated === 0 ? 0 : 1;
} finally {
  await stop();
}
