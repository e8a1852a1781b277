import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { describeSchema, SCHEMA_FILE } from '../../shared/db/schema-dump.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

/**
 * shared/db/schema.sql is the schema the migrations build, checked in so that a reader (and a review of a
 * migration) sees the whole of it. A migration that changes the schema without the file regenerated fails
 * here, on CI's PostgreSQL 15 and on the embedded 17 alike.
 */
let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase();
});

afterAll(async () => {
  await t?.drop();
});

test('shared/db/schema.sql is the schema after all migrations', async () => {
  const checkedIn = await readFile(SCHEMA_FILE, 'utf8').catch(() => '(missing)');
  const migrated = await describeSchema(t.db);
  expect(migrated, 'shared/db/schema.sql is out of date: run `npm run schema` and commit it').toBe(checkedIn);
});

test('the dump says every column, constraint, index, trigger and function', async () => {
  const dump = await describeSchema(t.db);
  expect(dump).toContain('CREATE TABLE jobs (\n  id uuid DEFAULT lana_uuid_v7() NOT NULL,');
  expect(dump).toMatch(
    /^ALTER TABLE job_execution_records ADD CONSTRAINT job_execution_records_outcome_check CHECK .*'undelivered'/m,
  );
  // A view with its query and its own (INSTEAD OF) triggers.
  expect(dump).toMatch(/^CREATE VIEW job_executions AS\n SELECT job_execution_records\.job_id,/m);
  expect(dump).toMatch(/^CREATE TRIGGER job_executions_insert INSTEAD OF INSERT ON public\.job_executions /m);
  expect(dump).toContain('ALTER TABLE jobs ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);');
  expect(dump).toMatch(
    /^CREATE INDEX jobs_ready_idx ON public\.jobs USING btree \(priority, scheduled_at, id\)/m,
  );
  expect(dump).toMatch(/^CREATE TRIGGER jobs_notify_inserted AFTER INSERT ON public\.jobs/m);
  expect(dump).toContain('CREATE OR REPLACE FUNCTION public.lana_jobs_claim_limited(');
  // Constraint-made indexes are said once, by their constraint.
  expect(dump).not.toMatch(/CREATE UNIQUE INDEX jobs_pkey/);
});
