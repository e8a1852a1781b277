import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';
import { ESBUILD, FUNCTION_ENTRIES, type FunctionName, PROJECT_ROOT } from './bundling.js';

export interface BundleSize {
  name: FunctionName;
  file: string;
  bytes: number;
  gzipBytes: number;
}

/**
 * Bundles every function with the settings `cdk synth` uses (infra/bundling.ts) into `outDir`, and
 * returns each bundle's size. Run as `npm run build:functions` to print them.
 */
export async function bundleFunctions(
  outDir = path.join(PROJECT_ROOT, 'cdk.out', 'bundle-report'),
): Promise<BundleSize[]> {
  await rm(outDir, { recursive: true, force: true });
  const entries = Object.entries(FUNCTION_ENTRIES) as [FunctionName, string][];
  return Promise.all(
    entries.map(async ([name, entry]): Promise<BundleSize> => {
      const dir = path.join(outDir, name);
      await mkdir(dir, { recursive: true });
      const file = path.join(dir, 'index.mjs');
      await build({
        entryPoints: [path.join(PROJECT_ROOT, entry)],
        outfile: file,
        bundle: true,
        target: ESBUILD.target,
        format: ESBUILD.format,
        platform: ESBUILD.platform,
        minify: ESBUILD.minify,
        sourcemap: ESBUILD.sourcemap,
        mainFields: [...ESBUILD.mainFields],
        banner: { js: ESBUILD.banner },
        logLevel: 'warning',
      });
      const code = await readFile(file);
      return { name, file, bytes: code.byteLength, gzipBytes: gzipSync(code).byteLength };
    }),
  );
}

function kib(bytes: number): string {
  return `${(bytes / 1024).toFixed(1)} KiB`;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const sizes = await bundleFunctions();
  const width = Math.max(...sizes.map((s) => s.name.length));
  console.log(`${'function'.padEnd(width)}  ${'bundle'.padStart(12)}  ${'gzipped'.padStart(12)}`);
  for (const s of sizes) {
    console.log(`${s.name.padEnd(width)}  ${kib(s.bytes).padStart(12)}  ${kib(s.gzipBytes).padStart(12)}`);
  }
  console.log('(the executor bundle is deployed once per job type; source maps are written alongside)');
}
