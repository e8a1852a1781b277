import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { OutputFormat, SourceMapMode } from 'aws-cdk-lib/aws-lambda-nodejs';
import { afterAll, expect, test } from 'vitest';
import { bundleFunctions } from '../../infra/bundle-report.js';
import { ESBUILD, FUNCTION_ENTRIES, nodejsBundling, PROJECT_ROOT } from '../../infra/bundling.js';

const outdir = await mkdtemp(path.join(tmpdir(), 'lana-bundles-'));
afterAll(() => rm(outdir, { recursive: true, force: true }));

// `cdk synth` bundles through NodejsFunction, `npm run build:functions` through esbuild's API; both read
// the settings in infra/bundling.ts. This test builds the bundles the second way (fast, no synth) and
// checks they load; the first way is exercised by `npx cdk synth`.
test('every function bundles with local esbuild into a loadable ESM module', async () => {
  const sizes = await bundleFunctions(path.join(outdir, 'bundles'));
  expect(sizes.map((s) => s.name).sort()).toEqual(Object.keys(FUNCTION_ENTRIES).sort());
  for (const s of sizes) {
    expect(s.bytes, s.name).toBeGreaterThan(10_000);
    // Under 1 MiB each: zod is imported as a namespace (`import * as z`), so esbuild drops what is
    // unused (its locales, JSON-schema code) instead of keeping the whole \`z\` object.
    expect(s.bytes, s.name).toBeLessThan(1024 * 1024);
    // The source map is a file beside the code, not inlined into it.
    const code = await readFile(s.file, 'utf8');
    expect(code, s.name).not.toContain('sourceMappingURL=data:');
    expect((await stat(`${s.file}.map`)).size, s.name).toBeGreaterThan(0);
    expect(s.gzipBytes).toBeLessThan(s.bytes);
    // Loading proves the ESM bundle resolves its CommonJS dependencies (the createRequire banner).
    const mod = (await import(pathToFileURL(s.file).href)) as { handler: unknown };
    expect(typeof mod.handler, s.name).toBe('function');
  }
}, 60_000);

test('NodejsFunction uses the same esbuild settings, and the migrate bundle gets the SQL files', async () => {
  const plain = nodejsBundling();
  expect(plain).toMatchObject({
    target: ESBUILD.target,
    format: OutputFormat.ESM,
    minify: true,
    sourceMap: true,
    // A separate .map file, not inlined into the code Lambda loads.
    sourceMapMode: SourceMapMode.DEFAULT,
    banner: ESBUILD.banner,
    mainFields: ESBUILD.mainFields,
    bundleAwsSDK: true,
  });
  expect(plain.commandHooks).toBeUndefined();
  const hooks = nodejsBundling({ copyMigrations: true }).commandHooks!;
  const out = path.join(outdir, 'migrate-asset');
  for (const command of hooks.afterBundling(PROJECT_ROOT, out)) execFileSync('sh', ['-c', command]);
  const copied = await readdir(path.join(out, 'migrations'));
  const source = (await readdir(path.join(PROJECT_ROOT, 'shared/db/migrations'))).filter((f) =>
    f.endsWith('.sql'),
  );
  expect(copied.sort()).toEqual(source.sort());
  expect(copied).toContain('0001_jobs.sql');
});
