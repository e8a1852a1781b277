import { spawn } from 'node:child_process';
import http from 'node:http';
import { Writable } from 'node:stream';
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runCli } from '../../shared/cli/main.js';
import { createJobTypeRegistry } from '../../shared/job-types/index.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { startDataApiFixture } from '../support/data-api-fixture.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => t.drop());

function sink() {
  let text = '';
  const stream = new Writable({
    write(chunk, _enc, cb) {
      text += chunk.toString();
      cb();
    },
  });
  return { stream, text: () => text };
}

async function jobs(...argv: string[]) {
  const out = sink();
  const err = sink();
  const code = await runCli([...argv, '--database-url', t.url], { stdout: out.stream, stderr: err.stream });
  return { code, stdout: out.text(), stderr: err.text() };
}

async function rowCount(): Promise<number> {
  const r = await t.db.query<{ n: number }>(
    'SELECT (SELECT count(*) FROM jobs)::int + (SELECT count(*) FROM job_executions)::int AS n',
  );
  return r.rows[0]!.n;
}

const PROCESS_ID = '0b7c8a52-57a4-4d51-a0a4-1c1f3f0c9d11';

describe('jobs CLI', () => {
  test('types lists the seed job types with their retry settings', async () => {
    const out = sink();
    const code = await runCli(['types', '--json'], { stdout: out.stream, stderr: sink().stream });
    expect(code).toBe(0);
    const types = JSON.parse(out.text()) as { type: string; retry: { maxAttempts: number } }[];
    expect(types.map((x) => x.type)).toEqual(
      expect.arrayContaining(['approval-processing', 'interest-accrual', 'notification', 'sync']),
    );
    expect(types.find((x) => x.type === 'interest-accrual')!.retry.maxAttempts).toBe(6);
  });

  test('migrate is idempotent', async () => {
    const r = await jobs('migrate', '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ applied: [] });
  });

  test('enqueue, list, show, cancel, retry, stats', async () => {
    const enq = await jobs(
      'enqueue',
      'interest-accrual',
      '--payload',
      '{"date":"2026-11-27"}',
      '--in',
      '5m',
      '--json',
    );
    expect(enq.code, enq.stderr).toBe(0);
    const { job, created } = JSON.parse(enq.stdout) as {
      job: { id: string; status: string; scheduledAt: string };
      created: boolean;
    };
    expect(created).toBe(true);
    expect(job.status).toBe('pending');
    expect(new Date(job.scheduledAt).getTime()).toBeGreaterThan(Date.now() + 4 * 60_000);

    const list = await jobs('list', '--type', 'interest-accrual', '--json');
    expect((JSON.parse(list.stdout) as { id: string }[]).map((j) => j.id)).toContain(job.id);

    const show = await jobs('show', job.id);
    expect(show.code).toBe(0);
    expect(show.stdout).toContain(job.id);
    expect(show.stdout).toContain('no attempts yet');

    const cancel = await jobs('cancel', job.id, '--json');
    expect(cancel.code).toBe(0);
    expect(JSON.parse(cancel.stdout).status).toBe('cancelled');
    const again = await jobs('cancel', job.id);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/is cancelled/);

    const retry = await jobs('retry', job.id, '--json');
    expect(retry.code).toBe(0);
    expect(JSON.parse(retry.stdout).status).toBe('pending');

    const stats = await jobs('stats', '--json');
    expect(stats.code).toBe(0);
    const s = JSON.parse(stats.stdout) as { counts: { jobType: string; status: string; count: number }[] };
    expect(s.counts).toContainEqual({ jobType: 'interest-accrual', status: 'pending', count: 1 });
  });

  test('purge deletes failed jobs with their history; other statuses stay', async () => {
    const tracker = new JobTracker({ db: t.db, registry: createJobTypeRegistry() });
    const [failing, keep] = await tracker.enqueueUntyped([
      { type: 'sync', payload: {}, maxAttempts: 1, priority: -1000 },
      { type: 'sync', payload: {}, runAt: new Date(Date.now() + 3_600_000) },
    ]);
    const [claimed] = await tracker.fetchReady(1);
    expect(claimed!.id).toBe(failing!.job.id);
    await tracker.markFailed(claimed!.id, 1, 'boom');
    // Without --yes: what it would delete, and nothing deleted.
    const dryRun = await jobs('purge', '--status', 'failed', '--older-than', '0s', '--type', 'sync');
    expect(dryRun.code, dryRun.stderr).toBe(0);
    expect(dryRun.stdout).toMatch(/^dry run: would delete 1 failed job\(s\) finished before /);
    expect(dryRun.stdout).toMatch(/^ {2}1 sync$/m);
    expect(dryRun.stdout).toMatch(/add --yes to delete them/);
    expect(await tracker.getJob(failing!.job.id)).not.toBeNull();
    const explicitDryRun = await jobs(
      'purge',
      '--status',
      'failed',
      '--older-than',
      '0s',
      '--dry-run',
      '--json',
    );
    expect(JSON.parse(explicitDryRun.stdout)).toMatchObject({ dryRun: true, wouldDelete: 1 });
    // Finished a moment ago: not older than an hour, so an hour's cut-off keeps it.
    const tooRecent = await jobs('purge', '--status', 'failed', '--older-than', '1h', '--yes', '--json');
    expect(JSON.parse(tooRecent.stdout).deleted).toBe(0);
    expect(await tracker.getJob(failing!.job.id)).not.toBeNull();
    const purged = await jobs(
      'purge',
      '--status',
      'failed',
      '--older-than',
      '0s',
      '--type',
      'sync',
      '--yes',
      '--json',
    );
    expect(purged.code, purged.stderr).toBe(0);
    expect(JSON.parse(purged.stdout).deleted).toBe(1);
    expect(await tracker.getJob(failing!.job.id)).toBeNull();
    expect(await tracker.getExecutions(failing!.job.id)).toEqual([]);
    expect((await tracker.getJob(keep!.job.id))!.status).toBe('pending');
    const bad = await jobs('purge', '--status', 'pending', '--older-than', '0s', '--yes');
    expect(bad.code).toBe(2);
    await tracker.cancel(keep!.job.id);
  });

  test('an idempotency key makes a second enqueue a no-op', async () => {
    const first = await jobs('enqueue', 'sync', '--key', 'cli-key-1', '--json');
    const before = await rowCount();
    const second = await jobs('enqueue', 'sync', '--key', 'cli-key-1', '--json');
    expect(second.code).toBe(0);
    expect(JSON.parse(second.stdout).created).toBe(false);
    expect(JSON.parse(second.stdout).job.id).toBe(JSON.parse(first.stdout).job.id);
    expect(await rowCount()).toBe(before);
  });

  const badInputs: [string, string[], RegExp][] = [
    ['unknown job type', ['enqueue', 'no-such-type'], /unknown job type "no-such-type"/],
    ['malformed JSON', ['enqueue', 'sync', '--payload', '{"target":'], /not valid JSON/],
    [
      'payload failing its schema',
      ['enqueue', 'approval-processing', '--payload', '{"processId":"42"}'],
      /payload\.processId/,
    ],
    [
      'payload with an unknown field',
      ['enqueue', 'approval-processing', '--payload', `{"processId":"${PROCESS_ID}","x":1}`],
      /invalid payload/,
    ],
    ['unknown option', ['enqueue', 'sync', '--bogus'], /Unknown option '--bogus'/],
    [
      'priority not a number',
      ['enqueue', 'sync', '--priority', 'high'],
      /priority must be an integer from -1000 to 1000, lower runs first \(got "high"\)/,
    ],
    [
      'priority out of range',
      ['enqueue', 'sync', '--priority', '100000'],
      /priority must be an integer from -1000 to 1000/,
    ],
    [
      'max attempts zero',
      ['enqueue', 'sync', '--max-attempts', '0'],
      /max attempts must be an integer from 1 to 100 \(got "0"\)/,
    ],
    ['time without zone', ['enqueue', 'sync', '--at', '2026-12-01 10:00'], /not an ISO 8601 time/],
    [
      'both --at and --in',
      ['enqueue', 'sync', '--at', '2026-12-01T00:00:00Z', '--in', '5m'],
      /either --at or --in/,
    ],
    ['bad duration', ['enqueue', 'sync', '--in', 'soon'], /not a duration/],
    ['too far ahead', ['enqueue', 'sync', '--in', '3650d'], /more than 5 years ahead/],
    ['missing type', ['enqueue'], /missing <type>/],
    ['extra argument', ['enqueue', 'sync', 'extra'], /unexpected argument "extra"/],
    ['show a non-UUID', ['show', 'abc'], /not a job id/],
    ['show an unknown id', ['show', PROCESS_ID], /no job with id/],
    ['retry an unknown id', ['retry', PROCESS_ID], /no job with id/],
    ['cancel a non-UUID', ['cancel', "1'; DROP TABLE jobs; --"], /not a job id/],
    ['list with an unknown status', ['list', '--status', 'done'], /--status must be one of/],
    ['list with limit 0', ['list', '--limit', '0'], /--limit must be from 1/],
    ['unknown command', ['frobnicate'], /unknown command "frobnicate"/],
    ['purge with no arguments', ['purge'], /--status is required/],
    ['purge without an age', ['purge', '--status', 'failed', '--yes'], /--older-than is required/],
    [
      'purge with a bad age',
      ['purge', '--status', 'failed', '--older-than', 'a week'],
      /--older-than "a week" is not a duration/,
    ],
    [
      'purge with an age out of range',
      ['purge', '--status', 'failed', '--older-than', '99999999d', '--yes'],
      /--older-than 99999999d is out of range/,
    ],
    [
      'a day that does not exist',
      ['enqueue', 'sync', '--at', '2027-02-30T00:00:00Z'],
      /does not exist|not a date and time that exists/,
    ],
    [
      'an hour that does not exist',
      ['enqueue', 'sync', '--at', '2027-02-01T24:30:00Z'],
      /not a date and time that exists/,
    ],
    ['year zero', ['enqueue', 'sync', '--at', '0000-01-01T00:00:00Z'], /out of range \(years 1970 to 9999\)/],
    ['--in out of range', ['enqueue', 'sync', '--in', '99999999d'], /--in 99999999d is out of range/],
    ['payload null', ['enqueue', 'sync', '--payload', 'null'], /payload must be a JSON object \(got null\)/],
    ['payload an array', ['enqueue', 'sync', '--payload', '[]'], /must be a JSON object \(got an array\)/],
    [
      'key with a replaced byte',
      ['enqueue', 'sync', '--key', 'a\uFFFDb'],
      /idempotency key is not valid UTF-8 text/,
    ],
    [
      'key with a lone surrogate',
      ['enqueue', 'sync', '--key', 'a\uD800b'],
      /idempotency key is not valid UTF-8 text/,
    ],
    [
      'key too long',
      ['enqueue', 'sync', '--key', 'k'.repeat(256)],
      /idempotency key must be 1 to 255 characters \(got 256\)/,
    ],
    [
      'max attempts negative',
      ['enqueue', 'sync', '--max-attempts', '-1'],
      /max attempts must be an integer from 1 to 100 \(got "-1"\)/,
    ],
    [
      'cancel with a reason too long',
      ['cancel', PROCESS_ID, '--reason', 'r'.repeat(501)],
      /--reason is 501 characters; at most 500/,
    ],
  ];

  test.each(
    badInputs,
  )('bad input: %s exits 2 with a one-line reason and writes nothing', async (_name, argv, message) => {
    const before = await rowCount();
    const r = await jobs(...argv);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stdout).toBe('');
    expect(await rowCount()).toBe(before);
  });

  test('--data-api runs commands through the RDS Data API (the local Data API fixture)', async () => {
    const fixture = await startDataApiFixture(t.url);
    const eventBridge = mockClient(EventBridgeClient);
    const env = {
      DATA_API_RESOURCE_ARN: 'arn:aws:rds:us-east-1:123456789012:cluster:lana-jobs',
      DATA_API_SECRET_ARN: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:lana-jobs',
      DATA_API_DATABASE: t.name,
      DATA_API_ENDPOINT: fixture.endpoint,
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
    };
    const saved = { ...process.env };
    Object.assign(process.env, env);
    try {
      const cli = async (...argv: string[]) => {
        const out = sink();
        const err = sink();
        const code = await runCli(argv, { stdout: out.stream, stderr: err.stream });
        return { code, stdout: out.text(), stderr: err.text() };
      };
      const enq = await cli(
        'enqueue',
        'interest-accrual',
        '--payload',
        '{"date":"2026-11-20"}',
        '--key',
        'via-data-api',
        '--data-api',
        '--json',
      );
      expect(enq.code, enq.stderr).toBe(0);
      const id = JSON.parse(enq.stdout).job.id as string;
      const show = await cli('show', id, '--data-api', '--json');
      expect(JSON.parse(show.stdout).job).toMatchObject({
        id,
        jobType: 'interest-accrual',
        payload: { date: '2026-11-20' },
      });
      expect(fixture.counts.Execute).toBeGreaterThan(0);
      // Without JOBS_BUS_NAME nothing is sent to EventBridge.
      expect(eventBridge.commandCalls(PutEventsCommand)).toHaveLength(0);

      // With the stack's bus name, a job due now wakes fetch-ready at once; one scheduled ahead does not.
      process.env.JOBS_BUS_NAME = 'lana-jobs';
      eventBridge.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: '1' }] });
      const due = await cli(
        'enqueue',
        'interest-accrual',
        '--payload',
        '{"date":"2026-11-21"}',
        '--data-api',
      );
      expect(due.code, due.stderr).toBe(0);
      const ahead = await cli(
        'enqueue',
        'interest-accrual',
        '--payload',
        '{"date":"2026-11-22"}',
        '--in',
        '1h',
        '--data-api',
      );
      expect(ahead.code, ahead.stderr).toBe(0);
      const nudges = eventBridge.commandCalls(PutEventsCommand).map((c) => c.args[0].input.Entries?.[0]);
      expect(nudges).toEqual([
        expect.objectContaining({ EventBusName: 'lana-jobs', DetailType: 'jobs.enqueued' }),
      ]);
      // A nudge that fails only warns: the job is enqueued and runs at fetch-ready's next minute.
      eventBridge.on(PutEventsCommand).rejects(new Error('throttled'));
      const warned = await cli(
        'enqueue',
        'interest-accrual',
        '--payload',
        '{"date":"2026-11-23"}',
        '--data-api',
      );
      expect(warned.code).toBe(0);
      expect(warned.stderr).toMatch(/could not wake fetch-ready \(throttled\)/);
      // An operator retry puts a job back due now: it wakes fetch-ready too.
      eventBridge.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: '2' }] });
      const aheadId = JSON.parse(
        (await cli('list', '--status', 'pending', '--json', '--data-api')).stdout,
      ).find((j: { payload: { date: string } }) => j.payload.date === '2026-11-22').id as string;
      expect((await cli('cancel', aheadId, '--data-api')).code).toBe(0);
      const calls = eventBridge.commandCalls(PutEventsCommand).length;
      expect((await cli('retry', aheadId, '--data-api')).code).toBe(0);
      expect(eventBridge.commandCalls(PutEventsCommand)).toHaveLength(calls + 1);
      delete process.env.JOBS_BUS_NAME;

      const both = await cli('list', '--data-api', '--database-url', t.url);
      expect(both.code).toBe(2);
      delete process.env.DATA_API_SECRET_ARN;
      const missing = await cli('stats', '--data-api');
      expect(missing.code).toBe(1);
      expect(missing.stderr).toMatch(/needs DATA_API_SECRET_ARN/);
    } finally {
      eventBridge.restore();
      process.env = saved;
      await fixture.close();
    }
  });

  test(
    '`jobs work` stops gracefully on SIGTERM: the running job finishes, nothing is left running',
    { timeout: 60_000 },
    async () => {
      // A price feed that answers slowly, so a valuation is mid-run when the signal arrives.
      let requests = 0;
      const feed = http.createServer((_req, res) => {
        requests++;
        setTimeout(
          () => res.writeHead(200).end(JSON.stringify({ price: '100000.00', at: new Date().toISOString() })),
          1500,
        );
      });
      await new Promise<void>((r) => feed.listen(0, '127.0.0.1', r));
      const port = (feed.address() as { port: number }).port;
      try {
        const { job } = (
          await new JobTracker({ db: t.db, registry: createJobTypeRegistry() }).enqueueUntyped([
            { type: 'sync', payload: {} },
          ])
        )[0]!;
        const child = spawn('node', ['bin/lana-jobs.js', 'work', '--database-url', t.url], {
          env: { ...process.env, LANA_PRICE_URL: `http://127.0.0.1:${port}/price` },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stderr = '';
        child.stderr.on('data', (c: Buffer) => {
          stderr += c.toString();
        });
        const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
        for (let i = 0; i < 200 && requests === 0; i++) await new Promise((r) => setTimeout(r, 50));
        expect(requests).toBeGreaterThan(0);
        child.kill('SIGTERM');
        expect(await exited).toBe(0);
        expect(stderr).toMatch(/SIGTERM: stopping/);
        expect(stderr).toMatch(/worker stopped runningJobsLeft=0/);
        // Each finished job on one line at info level, so an operator sees a job they enqueued run.
        expect(stderr).toMatch(/ info {2}job completed type=sync id=[0-9a-f-]{36} attempt=1\/\d+ ms=\d+\n/);
        const running = await t.db.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM jobs WHERE status = 'running'",
        );
        expect(running.rows[0]!.n).toBe(0);
        // The valuation that was running finished. Valuations run one at a time (the type's concurrency), so
        // this job, the schedule's tick or an earlier test's valuation ran, and the others wait.
        const finished = await t.db.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM jobs WHERE job_type = 'sync' AND status = 'completed' AND completed_at >= CAST(:since AS timestamptz)",
          { since: job.createdAt },
        );
        expect(finished.rows[0]!.n).toBe(1);
        const mine = await t.db.query<{ status: string }>(
          'SELECT status FROM jobs WHERE id = CAST(:id AS uuid)',
          {
            id: job.id,
          },
        );
        expect(['completed', 'pending']).toContain(mine.rows[0]!.status);
      } finally {
        feed.closeAllConnections();
        await new Promise((r) => feed.close(r));
      }
    },
  );

  test('negative option values work the ordinary way', async () => {
    const r = await jobs('enqueue', 'sync', '--priority', '-5', '--in', '1h', '--json');
    expect(r.code, r.stderr).toBe(0);
    const { job } = JSON.parse(r.stdout) as { job: { id: string; priority: number } };
    expect(job.priority).toBe(-5);
    expect((await jobs('cancel', job.id)).code).toBe(0);
  });

  test('a run time in the past is stored as now: due at once, not decades overdue', async () => {
    const before = Date.now();
    const r = await jobs('enqueue', 'sync', '--at', '1970-01-01T00:00:00Z', '--priority', '-1000', '--json');
    expect(r.code, r.stderr).toBe(0);
    const { job } = JSON.parse(r.stdout) as { job: { id: string; scheduledAt: string; createdAt: string } };
    expect(job.scheduledAt).toBe(job.createdAt);
    expect(Date.parse(job.scheduledAt)).toBeGreaterThanOrEqual(before - 5_000);
    const stats = JSON.parse((await jobs('stats', '--json')).stdout) as {
      queue: { oldestReadyAgeSeconds: number };
    };
    expect(stats.queue.oldestReadyAgeSeconds).toBeLessThan(3600);
    expect((await jobs('cancel', job.id, '--reason', 'test done')).code).toBe(0);
  });

  test("<command> --help prints that command's help", async () => {
    const purge = await jobs('purge', '--help');
    expect(purge.code).toBe(0);
    expect(purge.stdout).toMatch(/^lana-jobs purge --status S --older-than D/);
    expect(purge.stdout).toMatch(/--yes\s+delete/);
    expect(purge.stdout).not.toMatch(/^ {2}enqueue /m);
    const list = await jobs('list', '--help');
    expect(list.stdout).toMatch(/^Usage: lana-jobs list\n {2}list \[--status S\]/);
  });

  test("types shows each payload's fields, from its schema", async () => {
    const out = sink();
    expect(await runCli(['types'], { stdout: out.stream, stderr: sink().stream })).toBe(0);
    expect(out.text()).toMatch(
      /^approval-processing\n {2}processId\?: uuid, facilityId\?: uuid, sweep\?: "expire"$/m,
    );
    // The limits: at once, per time, per key.
    expect(out.text()).toMatch(/^approval-processing .* 10 at once, 1 per facilityId /m);
    expect(out.text()).toMatch(/^notification .* 20 at once, 14 per 1s /m);
    expect(out.text()).toMatch(/^interest-accrual\n {2}date\?: YYYY-MM-DD$/m);
    expect(out.text()).toMatch(/^ {2}kind: "payment-reminder", facilityId: uuid, dueDate: YYYY-MM-DD$/m);
    expect(out.text()).toMatch(/^ {2}kind: "obligation-overdue", facilityId: uuid, dueDate: YYYY-MM-DD$/m);
    const json = sink();
    await runCli(['types', '--json'], { stdout: json.stream, stderr: sink().stream });
    const types = JSON.parse(json.text()) as { type: string; payload: string[] }[];
    expect(types.find((x) => x.type === 'notification')!.payload).toHaveLength(3);
    expect(types.find((x) => x.type === 'approval-processing')).toMatchObject({
      concurrency: 10,
      concurrencyKey: { field: 'facilityId', limit: 1 },
    });
  });
});
