import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createObservability } from '../../functions/lib/powertools.js';
import { createMigrateHandler } from '../../functions/migrate/handler.js';
import type { DataApiDatabase } from '../../shared/db/data-api-driver.js';
import { type DataApiFixture, dataApiDriverOver, startDataApiFixture } from '../support/data-api-fixture.js';
import { adminUrl, createTestDatabase, type TestDatabase, urlForDatabase } from '../support/database.js';

/**
 * The migrations custom resource, through the Data API as the master user, creates the application user
 * and grants it DML only. A unique role name per run: roles are server-wide and other test files (and
 * other engineers' runs) share the server.
 */
const o = createObservability('test', { silent: true });
const user = {
  name: `lana_app_${randomBytes(4).toString('hex')}`,
  password: randomBytes(18).toString('base64url'),
};
let t: TestDatabase;
let fixture: DataApiFixture;
let db: DataApiDatabase;

beforeAll(async () => {
  t = await createTestDatabase({ migrate: false });
  fixture = await startDataApiFixture(t.url);
  db = dataApiDriverOver(fixture, t.name, {
    sdkRetries: true,
    secretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:master',
  });
});
afterAll(async () => {
  await db?.close();
  await fixture?.close();
  await t?.drop();
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  await admin
    .query(`DROP ROLE IF EXISTS ${user.name}_clone`)
    .then(() => admin.query(`DROP ROLE IF EXISTS ${user.name}`))
    .finally(() => admin.end());
});

/** Runs `sql` logged in as the application user (or the rotation's second user). */
async function asAppUser(sql: string, role = user.name): Promise<{ ok: true } | { ok: false; code: string }> {
  const url = new URL(urlForDatabase(adminUrl(), t.name));
  url.username = role;
  url.password = user.password;
  const c = new pg.Client({ connectionString: url.toString() });
  await c.connect();
  try {
    await c.query(sql);
    return { ok: true };
  } catch (err) {
    return { ok: false, code: (err as pg.DatabaseError).code ?? '?' };
  } finally {
    await c.end();
  }
}

test('migrations create the application user with a SCRAM password and grant it DML, not DDL', async () => {
  const handler = createMigrateHandler({ db, o, appUser: async () => user });
  const created = await handler({ RequestType: 'Create' });
  expect(created).toMatchObject({ Data: { AppUser: user.name } });
  expect(created.Data?.Applied).toContain('0001_jobs.sql');

  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    const { rows } = await admin.query<{ login: boolean; scram: boolean; superuser: boolean }>(
      `SELECT rolcanlogin AS login, rolpassword LIKE 'SCRAM-SHA-256$%' AS scram, rolsuper AS superuser
       FROM pg_authid WHERE rolname = $1`,
      [user.name],
    );
    expect(rows).toEqual([{ login: true, scram: true, superuser: false }]);
  } finally {
    await admin.end();
  }

  // DML on the job and lending tables.
  expect(await asAppUser('SELECT count(*) FROM jobs')).toEqual({ ok: true });
  expect(await asAppUser('SELECT count(*) FROM job_executions')).toEqual({ ok: true });
  // Views too: the history view takes the previous release's inserts and deletes (migration 0026).
  expect(
    await asAppUser(
      `INSERT INTO job_executions (job_id, attempt, claimed_at, finished_at, outcome)
       VALUES (gen_random_uuid(), 1, now(), now(), 'failed')`,
    ),
  ).toEqual({ ok: true });
  expect(await asAppUser('DELETE FROM job_executions WHERE outcome = $$failed$$')).toEqual({ ok: true });
  expect(await asAppUser('SELECT count(*) FROM job_execution_records')).toEqual({ ok: true });
  expect(await asAppUser('DELETE FROM jobs WHERE false')).toEqual({ ok: true });
  expect(await asAppUser('UPDATE credit_facilities SET id = id WHERE false')).toEqual({ ok: true });
  // No DDL, no TRUNCATE, and nothing on the migrations' own table.
  for (const sql of [
    'CREATE TABLE intruder (id int)',
    'DROP TABLE jobs',
    'ALTER TABLE jobs ADD COLUMN x int',
    'TRUNCATE jobs',
    'SELECT * FROM lana_migrations',
    'CREATE INDEX ON jobs (id)',
  ])
    expect(await asAppUser(sql), sql).toEqual({ ok: false, code: '42501' });
});

async function storedPassword(): Promise<string> {
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    const { rows } = await admin.query<{ p: string }>(
      'SELECT rolpassword AS p FROM pg_authid WHERE rolname = $1',
      [user.name],
    );
    return rows[0]!.p;
  } finally {
    await admin.end();
  }
}

test('a later deploy grants new tables and leaves the existing password alone', async () => {
  const before = await storedPassword();
  // What the first multi-user rotation does: a second login user, with the same password scheme.
  await db.query(`CREATE ROLE ${user.name}_clone LOGIN PASSWORD '${user.password}'`);
  await db.query('CREATE TABLE later_table (id int)');
  const handler = createMigrateHandler({
    db,
    o,
    appUser: async () => ({ name: user.name, password: 'a-password-rotation-already-replaced' }),
  });
  expect(await handler({ RequestType: 'Update', PhysicalResourceId: 'lana-jobs-migrations' })).toMatchObject({
    Data: { Applied: '', AppUser: user.name },
  });
  expect(await asAppUser('INSERT INTO later_table VALUES (1)')).toEqual({ ok: true });
  // The rotation's second user has what the first has, the new table included, and no DDL either.
  expect(await asAppUser('SELECT count(*) FROM later_table', `${user.name}_clone`)).toEqual({ ok: true });
  expect(await asAppUser('SELECT count(*) FROM jobs', `${user.name}_clone`)).toEqual({ ok: true });
  expect(await asAppUser('DROP TABLE jobs', `${user.name}_clone`)).toEqual({ ok: false, code: '42501' });
  // The password is rotation's from now on: the deploy does not reset it.
  expect(await storedPassword()).toBe(before);
});
