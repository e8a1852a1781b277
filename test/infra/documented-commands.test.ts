import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { PROJECT_ROOT } from '../../infra/bundling.js';
import { cdkJsonContext } from './support.js';

/**
 * The deploy commands the docs give synthesise as written, and a wrong setting stops the app with one
 * line naming the key (no stack trace).
 */

const DOCS = ['README.md', 'docs/aws.md', 'docs/deploy.md'];

/** Every `npx cdk synth|deploy` command in the docs' shell blocks (continuation lines joined), but `...` ones. */
function documentedCommands(): { doc: string; command: string; context: Record<string, string> }[] {
  const found = [];
  for (const doc of DOCS) {
    const text = readFileSync(path.join(PROJECT_ROOT, doc), 'utf8');
    for (const block of text.matchAll(/```sh\n([\s\S]*?)```/g)) {
      const lines = block[1]!.replace(/\\\n\s*/g, ' ').split('\n');
      for (const line of lines) {
        const command = line.trim();
        if (!/^npx cdk (synth|deploy)\b/.test(command) || command.includes('...')) continue;
        const context: Record<string, string> = {};
        for (const m of command.matchAll(/-c\s+([A-Za-z]+)=(\S+)/g)) context[m[1]!] = m[2]!;
        found.push({ doc, command, context });
      }
    }
  }
  return found;
}

/** `cdk synth` as the CLI runs it: the app in a child process, its context in CDK_CONTEXT_JSON. */
function runApp(context: Record<string, unknown>) {
  const outdir = mkdtempSync(path.join(tmpdir(), 'lana-cdk-out-'));
  try {
    const r = spawnSync(path.join(PROJECT_ROOT, 'node_modules/.bin/tsx'), ['infra/app.ts'], {
      cwd: PROJECT_ROOT,
      encoding: 'utf8',
      timeout: 120_000,
      env: {
        ...process.env,
        CDK_OUTDIR: outdir,
        // No esbuild here: bundling has its own test.
        CDK_CONTEXT_JSON: JSON.stringify({ ...cdkJsonContext(), 'aws:cdk:bundling-stacks': [], ...context }),
      },
    });
    return { ...r, synthesised: existsSync(path.join(outdir, 'LanaJobs.template.json')) };
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}

describe('the documented deploy commands', () => {
  const commands = documentedCommands();

  test('the README and docs/aws.md give a synth command with both required settings', () => {
    for (const doc of ['README.md', 'docs/aws.md']) {
      const synth = commands.filter((c) => c.doc === doc && c.command.startsWith('npx cdk synth'));
      expect(synth.length, doc).toBeGreaterThan(0);
      for (const c of synth) {
        expect(Object.keys(c.context)).toEqual(
          expect.arrayContaining(['notificationFromAddress', 'priceSourceUrl']),
        );
      }
    }
  });

  test('the README synth command synthesises the stack as written', () => {
    const readme = commands.find((c) => c.doc === 'README.md' && c.command.startsWith('npx cdk synth'))!;
    const r = runApp(readme.context);
    expect(r.status, r.stderr).toBe(0);
    expect(r.synthesised).toBe(true);
  }, 150_000);

  test.each(
    commands.map((c) => [`${c.doc}: ${c.command.slice(0, 60)}…`, c] as const),
  )('%s: its settings pass the stack settings parser', async (_name, c) => {
    const { stackPropsFromContext } = await import('../../infra/settings.js');
    const props = stackPropsFromContext((key) => c.context[key]);
    expect(props.notificationFromAddress).toBe(c.context.notificationFromAddress);
    expect(props.priceSourceUrl).toBe(c.context.priceSourceUrl);
  });
});

describe('a count given as anything but a whole number', () => {
  test.each([
    '1.5',
    '1e3',
    '-1',
    '0x10',
    ' 30',
  ])('claimBatchSize=%j is refused naming the key', async (value) => {
    const { stackPropsFromContext } = await import('../../infra/settings.js');
    const context: Record<string, string> = {
      notificationFromAddress: 'no-reply@notifications.your-bank.com',
      priceSourceUrl: 'https://prices.your-provider.com/x',
      claimBatchSize: value,
    };
    expect(() => stackPropsFromContext((key) => context[key])).toThrow(
      `context key "claimBatchSize" must be a whole number, 0 or more (got "${value}")`,
    );
    context.claimBatchSize = '30';
    expect(stackPropsFromContext((key) => context[key]).claimBatchSize).toBe(30);
  });
});

describe('a setting the stack refuses', () => {
  test.each([
    [
      'the old example sender on a reserved domain',
      { notificationFromAddress: 'loans@bank.example', priceSourceUrl: 'https://prices.your-provider.com/x' },
      /^lana-jobs stack: context key "notificationFromAddress" is on a reserved example domain \(bank\.example\)/,
    ],
    [
      'no price source',
      { notificationFromAddress: 'no-reply@notifications.your-bank.com' },
      /^lana-jobs stack: missing context key "priceSourceUrl": .*\(-c priceSourceUrl=https:\/\/\.\.\.\)$/,
    ],
    [
      'a malformed number',
      {
        notificationFromAddress: 'no-reply@notifications.your-bank.com',
        priceSourceUrl: 'https://prices.your-provider.com/x',
        jobRetentionDays: 'a month',
      },
      /^lana-jobs stack: context key "jobRetentionDays" must be a whole number, 0 or more \(got "a month"\)$/,
    ],
  ])(
    '%s: one line naming the key, exit 1, no stack trace',
    (_name, context, message) => {
      const r = runApp(context);
      expect(r.status).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr.trim()).toMatch(message);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(r.synthesised).toBe(false);
    },
    60_000,
  );
});
