import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { AwsJobClient } from '../../shared/aws/job-client.js';
import { runCli } from '../../shared/cli/main.js';
import { createConsoleApp } from '../../shared/console/server.js';
import { createJobTypeRegistry, type LendingTracker } from '../../shared/job-types/index.js';
import { JobInputError } from '../../shared/jobs/errors.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { schedules } from '../../shared/schedules/definitions.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * One door policy: the same bad input, given to every door that enqueues (the CLI, the console's form,
 * the application API `enqueueUntyped`, `AwsJobClient`), is refused with the same message (exit 2 in the
 * CLI, 400 in the console, a JobInputError in code), and nothing is written.
 */

let t: TestDatabase;
let tracker: LendingTracker;
let consoleApp: ReturnType<typeof createConsoleApp>;
const makeAws = () => new AwsJobClient({ registry: createJobTypeRegistry(), db: t.db, busName: '' });
let aws: ReturnType<typeof makeAws>;
let csrf: string;

beforeAll(async () => {
  t = await createTestDatabase();
  tracker = new JobTracker({ db: t.db, registry: createJobTypeRegistry() });
  consoleApp = createConsoleApp({ tracker, schedules });
  aws = makeAws();
  const form = await (await consoleApp.request('http://localhost/enqueue?type=sync')).text();
  csrf = /name="_csrf" value="([^"]+)"/.exec(form)![1]!;
});
afterAll(async () => {
  await t?.drop();
});

interface BadInput {
  name: string;
  type: string;
  /** The payload as JSON text (what the CLI's --payload and the console's payload field carry). */
  payload?: string;
  at?: string;
  key?: string;
  priority?: string;
  maxAttempts?: string;
  /** The refusal every door gives, matched in full. */
  message: RegExp;
}

const UUID = '0193a1b2-0000-7000-8000-000000000001';
const RANGE = /must be from 2000-01-01 to 2099-12-31/;
const NOT_A_DATE = /expected a date as YYYY-MM-DD/;
const NOT_CALENDAR = /not a calendar date/;

/** Business dates: every payload field that takes one, with each kind of bad date. */
const BAD_DATES: [string, RegExp][] = [
  ['0000-01-01', RANGE],
  ['1999-12-31', RANGE],
  ['1900-06-15', RANGE],
  ['2100-01-01', RANGE],
  ['9999-12-31', RANGE],
  ['2027-02-30', NOT_CALENDAR],
  ['2026-02-29', NOT_CALENDAR],
  ['2026-04-31', NOT_CALENDAR],
  ['2026-13-01', NOT_CALENDAR],
  ['2026-00-10', NOT_CALENDAR],
  ['2026-1-1', NOT_A_DATE],
  ['20261201', NOT_A_DATE],
  ['2026-12-01T00:00:00Z', NOT_A_DATE],
  ['tomorrow', NOT_A_DATE],
];

const DATE_FIELDS: { type: string; field: string; rest: Record<string, unknown> }[] = [
  { type: 'payment-reminders', field: 'date', rest: {} },
  { type: 'notification', field: 'dueDate', rest: { kind: 'payment-reminder', facilityId: UUID } },
  { type: 'notification', field: 'valuationDate', rest: { kind: 'margin-call', facilityId: UUID } },
  { type: 'notification', field: 'valuationDate', rest: { kind: 'liquidation-call', facilityId: UUID } },
  {
    type: 'notification',
    field: 'valuationDate',
    rest: { kind: 'collateral-recovered', facilityId: UUID },
  },
  { type: 'interest-accrual', field: 'date', rest: {} },
];

const dateInputs: BadInput[] = DATE_FIELDS.flatMap(({ type, field, rest }) =>
  BAD_DATES.map(([date, message]) => ({
    name: `${type} ${String(rest.kind ?? '')} ${field}=${date}`,
    type,
    payload: JSON.stringify({ ...rest, [field]: date }),
    message,
  })),
);

const payloadInputs: BadInput[] = [
  ...['42', 'not-a-uuid', '', `${UUID}0`, UUID.replace('1', 'g'), UUID.replaceAll('-', '')].flatMap((id) => [
    {
      name: `approval processId ${JSON.stringify(id)}`,
      type: 'approval-processing',
      payload: JSON.stringify({ processId: id }),
      // Matched loosely: the message names the field, or the union it failed, by the schema's shape.
      message: /^invalid payload for approval-processing: payload/,
    },
    {
      name: `notification facilityId ${JSON.stringify(id)}`,
      type: 'notification',
      payload: JSON.stringify({ kind: 'margin-call', facilityId: id, valuationDate: '2026-01-05' }),
      message: /payload\.facilityId: Invalid UUID/,
    },
  ]),
  ...[
    ['payment-reminders', '{"date":20261201}'],
    ['payment-reminders', '{"date":null}'],
    ['payment-reminders', '{"date":true}'],
    ['interest-accrual', '{"date":["2026-01-01"]}'],
  ].map(([type, payload]) => ({
    name: `${type} ${payload} (not a string)`,
    type: type!,
    payload,
    message: /payload\.date: Invalid input: expected string/,
  })),
  {
    name: 'unknown field',
    type: 'payment-reminders',
    payload: '{"day":"2026-01-01"}',
    message: /Unrecognized key: "day"/,
  },
  {
    name: 'unknown notification kind',
    type: 'notification',
    payload: `{"kind":"hello","facilityId":"${UUID}"}`,
    message: /payload\.kind/,
  },
  { name: 'missing processId', type: 'approval-processing', payload: '{}', message: /payload\.processId/ },
  { name: 'sync target', type: 'sync', payload: '{"target":"everything"}', message: /payload\.target/ },
  { name: 'maintenance task', type: 'maintenance', payload: '{"task":"drop"}', message: /payload\.task/ },
  ...['null', '[]', '[1,2]', '42', '"text"', 'true'].map((text) => ({
    name: `payload ${text}`,
    type: 'sync',
    payload: text,
    message: /^payload must be a JSON object \(got (null|an array|a number|a string|a boolean)\)$/,
  })),
];

/** Not JSON at all: the API takes objects, so only the doors that read text. */
const JSON_TEXT_INPUTS: BadInput[] = ['{', '{"target":', "{'a':1}", '{a:1}', 'undefined', '{"a":1,}'].map(
  (text) => ({
    name: `payload text ${text}`,
    type: 'sync',
    payload: text,
    message: /^payload is not valid JSON: /,
  }),
);

const TIME_EXISTS = /is not a date and time that exists$/;
const TIME_RANGE = /is out of range \(years 1970 to 9999\)$/;
const NOT_TIME = /is not an ISO 8601 time \(e\.g\. 2026-12-01T00:00:00Z\)$/;
const timeInputs: BadInput[] = [
  ['2027-02-30T00:00:00Z', TIME_EXISTS],
  ['2027-02-30T00:00', TIME_EXISTS],
  ['2026-02-29T12:00:00Z', TIME_EXISTS],
  ['2026-04-31T00:00:00Z', TIME_EXISTS],
  ['2026-13-01T00:00:00Z', TIME_EXISTS],
  ['2026-12-00T00:00:00Z', TIME_EXISTS],
  ['2026-12-01T24:00:00Z', TIME_EXISTS],
  ['2026-12-01T24:00', TIME_EXISTS],
  ['2026-12-01T23:60:00Z', TIME_EXISTS],
  ['2026-12-01T23:59:60Z', TIME_EXISTS],
  ['1969-12-31T23:59:59Z', TIME_RANGE],
  ['1969-07-20T20:17', TIME_RANGE],
  ['0000-01-01T00:00:00Z', TIME_RANGE],
  ['9999-12-31T00:00:00Z', /^run at is more than 5 years ahead$/],
  ['2090-01-01T00:00:00Z', /^run at is more than 5 years ahead$/],
  ['2026-12-01 10:00', NOT_TIME],
  ['2026-12-01', NOT_TIME],
  ['10000-01-01T00:00:00Z', NOT_TIME],
  ['now', NOT_TIME],
  ['tomorrow 9am', NOT_TIME],
  ['2026-12-01T10:00:00+25:00', /has a time zone offset that does not exist$/],
  ['1764547200', NOT_TIME],
].map(([at, message]) => ({
  name: `run at ${at}`,
  type: 'sync',
  at: at as string,
  message: message as RegExp,
}));

const PRIORITY = /^priority must be an integer from -1000 to 1000, lower runs first \(got ".*"\)$/;
const priorityInputs: BadInput[] = [
  'high',
  '1.5',
  '1e3',
  '1001',
  '-1001',
  '100000',
  ' 5',
  '5 ',
  '+5',
  '0x10',
  '٣',
].map((priority) => ({
  name: `priority ${JSON.stringify(priority)}`,
  type: 'sync',
  priority,
  message: PRIORITY,
}));

const ATTEMPTS = /^max attempts must be an integer from 1 to 100 \(got ".*"\)$/;
const attemptInputs: BadInput[] = ['0', '-1', '101', '1.5', 'many', '1e2', '10000', ' 3'].map(
  (maxAttempts) => ({
    name: `max attempts ${JSON.stringify(maxAttempts)}`,
    type: 'sync',
    maxAttempts,
    message: ATTEMPTS,
  }),
);

const NOT_UTF8 = /^idempotency key is not valid UTF-8 text \(it holds U\+FFFD or a lone surrogate\)$/;
const keyInputs: BadInput[] = [
  {
    name: 'key of 256 characters',
    key: 'k'.repeat(256),
    message: /^idempotency key must be 1 to 255 characters \(got 256\)$/,
  },
  {
    name: 'key of 1000 characters',
    key: 'k'.repeat(1000),
    message: /^idempotency key must be 1 to 255 characters \(got 1000\)$/,
  },
  { name: 'key with a replaced byte', key: 'a\uFFFDb', message: NOT_UTF8 },
  { name: 'key of a replaced byte', key: '\uFFFD', message: NOT_UTF8 },
  { name: 'key with a lone surrogate', key: 'a\uD800b', message: NOT_UTF8 },
  { name: 'key with a NUL', key: 'a\u0000b', message: /^idempotency key contains a NUL character$/ },
].map((k) => ({ ...k, type: 'sync' }));

const typeInputs: BadInput[] = ['no-such-type', 'SYNC', 'sync ', 'interest_accrual'].map((type) => ({
  name: `type ${JSON.stringify(type)}`,
  type,
  message: /^unknown job type ".*" \(known: /,
}));

const ALL_DOORS: BadInput[] = [
  ...dateInputs,
  ...payloadInputs,
  ...timeInputs,
  ...priorityInputs,
  ...attemptInputs,
  ...keyInputs,
  ...typeInputs,
];

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

async function jobCount(): Promise<number> {
  const r = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs');
  return r.rows[0]!.n;
}

/** The CLI: exit 2, one line on stderr, which is the message. */
async function throughCli(input: BadInput): Promise<string> {
  const argv = ['enqueue', input.type];
  if (input.payload !== undefined) argv.push('--payload', input.payload);
  if (input.at !== undefined) argv.push('--at', input.at);
  if (input.key !== undefined) argv.push('--key', input.key);
  if (input.priority !== undefined) argv.push(`--priority=${input.priority}`);
  if (input.maxAttempts !== undefined) argv.push(`--max-attempts=${input.maxAttempts}`);
  const out = sink();
  const err = sink();
  const code = await runCli([...argv, '--database-url', t.url], { stdout: out.stream, stderr: err.stream });
  expect(code, err.text()).toBe(2);
  expect(out.text()).toBe('');
  const prefix = 'lana-jobs enqueue: ';
  expect(err.text().startsWith(prefix) && err.text().endsWith('\n')).toBe(true);
  expect(err.text().trim().split('\n')).toHaveLength(1);
  return err.text().slice(prefix.length, -1);
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'", '#96': '`' };

/** The console's enqueue form: 400, the message in #error. */
async function throughConsole(input: BadInput): Promise<string> {
  const form = new URLSearchParams({ _csrf: csrf, type: input.type });
  if (input.payload !== undefined) form.set('payload', input.payload);
  if (input.at !== undefined) form.set('at', input.at);
  if (input.key !== undefined) form.set('key', input.key);
  if (input.priority !== undefined) form.set('priority', input.priority);
  if (input.maxAttempts !== undefined) form.set('maxAttempts', input.maxAttempts);
  const res = await consoleApp.request('http://localhost/enqueue', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form.toString(),
  });
  const body = await res.text();
  expect(res.status, body.slice(0, 300)).toBe(400);
  const m = /<p class="error" id="error">([^<]*)<\/p>/.exec(body);
  expect(m, body.slice(0, 500)).not.toBeNull();
  return m![1]!.replace(/&(amp|lt|gt|quot|#39|#96);/g, (_, e: string) => ENTITIES[e]!);
}

async function refusal(run: () => Promise<unknown>): Promise<string> {
  const err = await run().then(
    () => new Error('accepted'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(JobInputError);
  return (err as Error).message;
}

function apiJob(input: BadInput) {
  return {
    type: input.type,
    payload: input.payload === undefined ? undefined : JSON.parse(input.payload),
    runAt: input.at,
    idempotencyKey: input.key,
    priority: input.priority,
    maxAttempts: input.maxAttempts,
  };
}

describe('one door policy: the same bad input is refused the same way at every door', () => {
  test('the table holds at least 150 bad inputs', () => {
    expect(ALL_DOORS.length + JSON_TEXT_INPUTS.length).toBeGreaterThanOrEqual(150);
  });

  test.each(
    ALL_DOORS.map((i) => [i.name, i] as const),
  )('%s: CLI, console, API and AwsJobClient refuse it alike', async (_name, input) => {
    const before = await jobCount();
    const cli = await throughCli(input);
    expect(cli).toMatch(input.message);
    expect(await throughConsole(input)).toBe(cli);
    expect(await refusal(() => tracker.enqueueUntyped([apiJob(input)]))).toBe(cli);
    expect(await refusal(() => aws.enqueueUntyped([apiJob(input)]))).toBe(cli);
    expect(await jobCount()).toBe(before);
  });

  test.each(
    JSON_TEXT_INPUTS.map((i) => [i.name, i] as const),
  )('%s: the CLI and the console refuse it alike', async (_name, input) => {
    const before = await jobCount();
    const cli = await throughCli(input);
    expect(cli).toMatch(input.message);
    expect(await throughConsole(input)).toBe(cli);
    expect(await jobCount()).toBe(before);
  });

  test('a key sent to the console as bytes that are not UTF-8 is refused, not stored as U+FFFD', async () => {
    const before = await jobCount();
    const res = await consoleApp.request('http://localhost/enqueue', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `_csrf=${encodeURIComponent(csrf)}&type=sync&key=a%FF%FEb`,
    });
    expect(res.status).toBe(400);
    expect(await res.text()).toContain('idempotency key is not valid UTF-8 text');
    expect(await jobCount()).toBe(before);
  });

  test('the console reads a run time without a zone as UTC; the CLI asks for the zone', async () => {
    const form = new URLSearchParams({ _csrf: csrf, type: 'sync', at: '2030-02-28T10:00' });
    const res = await consoleApp.request('http://localhost/enqueue', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: form.toString(),
    });
    expect(res.status).toBe(303);
    const id = /\/jobs\/([0-9a-f-]{36})/.exec(res.headers.get('location')!)![1]!;
    expect((await tracker.requireJob(id)).scheduledAt.toISOString()).toBe('2030-02-28T10:00:00.000Z');
    const cli = await throughCli({ name: 'zoneless', type: 'sync', at: '2030-02-28T10:00', message: /./ });
    expect(cli).toBe('run at "2030-02-28T10:00" has no time zone (add Z for UTC, e.g. 2026-12-01T00:00:00Z)');
  });

  test('the console filter reads times and keys by the same rules (400, nothing rolled over)', async () => {
    for (const [query, message] of [
      ['from=2027-02-30T00:00', 'from "2027-02-30T00:00" is not a date and time that exists'],
      ['to=2026-12-01T24:00', 'to "2026-12-01T24:00" is not a date and time that exists'],
      ['from=1969-01-01T00:00', 'from "1969-01-01T00:00" is out of range (years 1970 to 9999)'],
      ['key=a%FFb', 'idempotency key is not valid UTF-8 text (it holds U+FFFD or a lone surrogate)'],
    ] as const) {
      for (const path of ['/jobs', '/jobs/bulk?action=retry&']) {
        const res = await consoleApp.request(
          `http://localhost${path}${path.endsWith('&') ? '' : '?'}${query}`,
        );
        expect(res.status, `${path} ${query}`).toBe(400);
        expect(await res.text()).toContain(
          `<p class="error" id="error">${message.replaceAll('"', '&quot;')}</p>`,
        );
      }
    }
  });

  test('a good business date at each bound is accepted by every door', async () => {
    const before = await jobCount();
    // The sweep may not run for a day that has not begun: its upper bound is today (notifications' dates
    // reach 2099-12-31).
    const today = new Date().toISOString().slice(0, 10);
    for (const [i, date] of ['2000-01-01', today].entries()) {
      const payload = JSON.stringify({ date });
      const cli = sink();
      const code = await runCli(
        [
          'enqueue',
          'payment-reminders',
          '--payload',
          payload,
          '--key',
          `bound-cli-${i}`,
          '--database-url',
          t.url,
        ],
        { stdout: cli.stream, stderr: sink().stream },
      );
      expect(code).toBe(0);
      const res = await consoleApp.request('http://localhost/enqueue', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          _csrf: csrf,
          type: 'payment-reminders',
          'payload.date': date,
          key: `bound-console-${i}`,
        }).toString(),
      });
      expect(res.status).toBe(303);
      await tracker.enqueueUntyped([
        { type: 'payment-reminders', payload: { date }, idempotencyKey: `bound-api-${i}` },
      ]);
    }
    expect(await jobCount()).toBe(before + 6);
  });
});
