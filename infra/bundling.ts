import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Runtime } from 'aws-cdk-lib/aws-lambda';
import { type BundlingOptions, LogLevel, OutputFormat, SourceMapMode } from 'aws-cdk-lib/aws-lambda-nodejs';

/** The repository root (where package-lock.json is): NodejsFunction's project root and esbuild's base. */
export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * nodejs22.x matches the toolchain's language level and is supported by Lambda until 2027; 24.x is newer
 * but the local toolchain (Node 20, middy 6) is not tested against it.
 */
export const LAMBDA_RUNTIME = Runtime.NODEJS_22_X;

/** Where the migrate function finds its SQL files inside the bundle (copied there after bundling). */
export const MIGRATIONS_DIR_IN_BUNDLE = '/var/task/migrations';

/** The Lambda functions: id → entry file. Each becomes one bundle; the executor bundle serves every type. */
export const FUNCTION_ENTRIES = {
  'fetch-ready': 'functions/fetch-ready/handler.ts',
  executor: 'functions/executor/handler.ts',
  schedule: 'functions/schedule/handler.ts',
  migrate: 'functions/migrate/handler.ts',
} as const;
export type FunctionName = keyof typeof FUNCTION_ENTRIES;

/**
 * The esbuild settings every function is built with, in one place so `cdk synth` and
 * `npm run build:functions` produce the same bundles:
 * - ESM, because the code is ESM; CJS dependencies (the X-Ray SDK under Powertools Tracer) call
 *   `require`, which an ESM bundle only has through `createRequire`;
 * - the AWS SDK is bundled, not taken from the runtime, so the SDK version (and error classes such as
 *   `DatabaseResumingException`) is the one the tests ran against;
 * - minified, with source maps (NODE_OPTIONS=--enable-source-maps maps stack traces back to TypeScript).
 */
export const ESBUILD = {
  target: 'node22',
  format: 'esm',
  platform: 'node',
  minify: true,
  sourcemap: true,
  mainFields: ['module', 'main'],
  banner: "import { createRequire } from 'node:module';const require = createRequire(import.meta.url);",
} as const;

/** The same settings as NodejsFunction bundling options. */
export function nodejsBundling(options: { copyMigrations?: boolean } = {}): BundlingOptions {
  return {
    target: ESBUILD.target,
    format: OutputFormat.ESM,
    minify: ESBUILD.minify,
    sourceMap: ESBUILD.sourcemap,
    sourceMapMode: SourceMapMode.DEFAULT,
    mainFields: [...ESBUILD.mainFields],
    banner: ESBUILD.banner,
    bundleAwsSDK: true,
    externalModules: [],
    // esbuild prints each bundle's size during synth.
    logLevel: LogLevel.INFO,
    commandHooks: options.copyMigrations
      ? {
          beforeBundling: () => [],
          beforeInstall: () => [],
          afterBundling: (inputDir: string, outputDir: string) => [
            `mkdir -p "${outputDir}/migrations"`,
            `cp "${inputDir}"/shared/db/migrations/*.sql "${outputDir}/migrations/"`,
          ],
        }
      : undefined,
  };
}
