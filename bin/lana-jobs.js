#!/usr/bin/env node
// The `lana-jobs` CLI (`npx lana-jobs <command>` in a checkout; not `jobs`, a shell built-in). TypeScript sources run through tsx's loader, so there is no build step to forget.
import { register } from 'tsx/esm/api';

register();
const { runCli } = await import('../shared/cli/main.ts');
process.exitCode = await runCli(process.argv.slice(2));
