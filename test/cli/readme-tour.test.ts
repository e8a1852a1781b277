import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest';
import { runCli } from '../../shared/cli/main.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * The README's tour, command by command as written (`npx lana-jobs …` read as the shell would split it),
 * on today's clock and on fixed clocks: it must work whatever day a reader runs it. `npm start` (the
 * runtime the tour runs beside) is test/runtime/dev-stop.test.ts; `npx cdk synth`,
 * test/infra/documented-commands.test.ts. Where the tour reads a job the runtime would have run (the
 * demo's valuation, the approval that fails), the test leaves that job as a worker would.
 */

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());
afterEach(() => {
  vi.useRealTimers();
});

/** The words of a command line: single and double quotes as sh reads them, a trailing `# comment` dropped. */
function shellWords(line: string): string[] {
  const words: string[] = [];
  let word: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "'" || c === '"') {
      const end = line.indexOf(c, i + 1);
      word = (word ?? '') + line.slice(i + 1, end);
      i = end;
    } else if (c === ' ') {
      if (word !== null) words.push(word);
      word = null;
    } else if (c === '#' && word === null) break;
    else word = (word ?? '') + c;
  }
  if (word !== null) words.push(word);
  return words;
}

/** Every `npx lana-jobs` command in the README's shell blocks. */
function readmeCommands(): string[][] {
  const readme = readFileSync('README.md', 'utf8');
  const commands: string[][] = [];
  for (const block of readme.matchAll(/```sh\n([\s\S]*?)```/g)) {
    for (const line of block[1]!.split('\n')) {
      const words = shellWords(line.trim());
      if (words[0] === 'npx' && words[1] === 'lana-jobs') commands.push(words.slice(2));
    }
  }
  return commands;
}

function sink() {
  let text = '';
  const stream = new Writable({
    write(chunk, _enc, done) {
      text += String(chunk);
      done();
    },
  });
  return { stream, text: () => text };
}

async function cli(argv: string[]) {
  const out = sink();
  const err = sink();
  const code = await runCli([...argv, '--database-url', t.url], { stdout: out.stream, stderr: err.stream });
  return { code, stdout: out.text(), stderr: err.text() };
}

const ID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;

/** Runs the tour; `<id>` is the first job the command before it listed. */
async function runTour(): Promise<string[]> {
  // The demo's valuation, which `list --type sync` shows (npm start enqueues it).
  expect((await cli(['enqueue', 'sync'])).code).toBe(0);
  let lastId: string | undefined;
  const ran: string[] = [];
  for (const words of readmeCommands()) {
    const argv = words.map((w) => (w === '<id>' ? lastId! : w));
    const r = await cli(argv);
    ran.push(argv.join(' '));
    expect(r.code, `${argv.join(' ')}: ${r.stderr}`).toBe(0);
    expect(r.stderr).toBe('');
    if (argv[0] === 'enqueue' && argv[1] === 'approval-processing') {
      // No such approval process: the worker fails it at once (PermanentJobError), as npm start's does.
      const id = ID.exec(r.stdout)![0];
      await t.db.query(
        "UPDATE jobs SET status = 'failed', attempts = 1, completed_at = now(), last_error = 'no approval process' WHERE id = CAST(:id AS uuid)",
        { id },
      );
    }
    if (argv[0] === 'list') lastId = ID.exec(r.stdout)?.[0];
  }
  return ran;
}

describe("the README's tour, as written", () => {
  test('its commands are the ones a reader types', () => {
    const commands = readmeCommands().map((w) => w.join(' '));
    expect(commands).toContain('types');
    expect(commands.some((c) => c.startsWith('enqueue interest-accrual'))).toBe(true);
    expect(commands).toContain('retry <id>');
    expect(commands).toContain('stats');
  });

  test("on today's clock", async () => {
    const ran = await runTour();
    expect(ran.length).toBeGreaterThanOrEqual(8);
  });

  test.each([
    '2026-11-15T12:00:00Z',
    '2026-12-01T00:30:00Z',
    '2031-06-30T23:59:00Z',
  ])('on a clock fixed at %s', async (now) => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date(now));
    await runTour();
  });
});
