import { spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runCli } from '../../shared/cli/main.js';
import { createConsoleApp } from '../../shared/console/server.js';
import { createJobTypeRegistry } from '../../shared/job-types/index.js';
import { JobTracker } from '../../shared/jobs/tracker.js';
import { latestTick } from '../../shared/schedules/cron.js';
import { jobForTick, schedules } from '../../shared/schedules/definitions.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => {
  await t?.drop();
});

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

describe('jobs console', () => {
  test('prints its URL, serves the overview, and stops on SIGINT', async () => {
    const child = spawn('node', ['bin/lana-jobs.js', 'console', '--port', '0', '--database-url', t.url], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d) => {
          out += String(d);
          const m = /console: (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
          if (m) resolve(m[1]!);
        });
        child.once('exit', (code) => reject(new Error(`console exited with ${code}`)));
        setTimeout(() => reject(new Error(`no URL printed: ${out}`)), 15_000);
      });
      const res = await fetch(url);
      expect(res.status).toBe(200);
      expect(await res.text()).toContain('Jobs by type and status');
    } finally {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGINT');
      await exited;
    }
    expect(child.exitCode).toBe(0);
  });

  test('another address than loopback without a token is a usage error', async () => {
    const out = sink();
    const err = sink();
    const code = await runCli(['console', '--host', '0.0.0.0', '--port', '0', '--database-url', t.url], {
      stdout: out.stream,
      stderr: err.stream,
    });
    expect(code).toBe(2);
    expect(err.text()).toMatch(/needs a token/);
  });

  test('with a token, a request without it is refused; a bearer header or ?token= once lets it in', async () => {
    const tracker = new JobTracker({ db: t.db, registry: createJobTypeRegistry() });
    const token = 'a-long-console-token-123';
    const app = createConsoleApp({ tracker, schedules, token });
    expect((await app.request('/')).status).toBe(401);
    expect(
      (await app.request('/jobs', { headers: { authorization: 'Bearer wrong-token-000000' } })).status,
    ).toBe(401);
    expect((await app.request('/jobs', { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    const first = await app.request(`/jobs?status=failed&token=${token}`);
    expect(first.status).toBe(303);
    expect(first.headers.get('location')).toBe('/jobs?status=failed');
    const cookie = first.headers.get('set-cookie')!.split(';')[0]!;
    expect(first.headers.get('set-cookie')).toMatch(/HttpOnly/);
    expect((await app.request('/jobs?status=failed', { headers: { cookie } })).status).toBe(200);
  });

  test("the schedules page shows each expression, its next fire time and the last tick's job", async () => {
    const tracker = new JobTracker({ db: t.db, registry: createJobTypeRegistry() });
    const schedule = schedules.find((s) => s.name === 'portfolio-valuation')!;
    const tick = latestTick(schedule.expression, new Date())!;
    const [r] = await tracker.enqueueUntyped([jobForTick(schedule, tick)]);
    const app = createConsoleApp({ tracker, schedules });
    const page = await (await app.request('/schedules')).text();
    expect(page).toContain('rate(5 minutes)');
    expect(page).toContain(`href="/jobs/${r!.job.id}"`);
    for (const s of schedules) expect(page).toContain(s.name);
    const unknown = await app.request('/jobs/0193a1b2-0000-7000-8000-000000000099');
    expect(unknown.status).toBe(404);
    expect(await unknown.text()).toContain('no job with id');
    expect((await app.request('/jobs?id=not-an-id')).status).toBe(400);
    expect((await app.request('/jobs?from=yesterday')).status).toBe(400);
  });
});
