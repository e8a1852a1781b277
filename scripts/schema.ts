/**
 * `npm run schema`: writes shared/db/schema.sql, the schema after all migrations. Migrates a scratch
 * database on the server of DATABASE_URL (else on the embedded PostgreSQL), reads its catalog, drops it.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import pg from 'pg';
import { migrate } from '../shared/db/migrate.js';
import { PgDatabase } from '../shared/db/pg-driver.js';
import { describeSchema, SCHEMA_FILE } from '../shared/db/schema-dump.js';
import { startEmbeddedPostgres } from '../shared/runtime/embedded-postgres.js';

const embedded = process.env.DATABASE_URL ? undefined : await startEmbeddedPostgres();
const adminUrl = process.env.DATABASE_URL ?? embedded!.adminUrl;
const name = `lana_schema_${randomBytes(5).toString('hex')}`;

async function admin(statement: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

try {
  await admin(`CREATE DATABASE ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const db = new PgDatabase({ connectionString: url.toString(), max: 1 });
  try {
    await migrate(db);
    await writeFile(SCHEMA_FILE, await describeSchema(db));
  } finally {
    await db.close();
    await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  }
  console.log(`wrote ${SCHEMA_FILE}`);
} finally {
  await embedded?.stop();
}
