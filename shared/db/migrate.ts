import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Database } from './port.js';
import { splitSqlScript } from './sql-script.js';

/** Where the plain SQL migration files live. The Lambda bundle copies this folder next to its code. */
export const defaultMigrationsDir =
  process.env.LANA_MIGRATIONS_DIR ?? fileURLToPath(new URL('./migrations/', import.meta.url));

export interface Migration {
  name: string;
  sql: string;
}

/** Reads `NNNN_description.sql` files in name order. */
export async function loadMigrations(dir: string = defaultMigrationsDir): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => /^\d{4}_[\w-]+\.sql$/.test(f)).sort();
  return Promise.all(files.map(async (name) => ({ name, sql: await readFile(`${dir}/${name}`, 'utf8') })));
}

/**
 * Applies the migrations not yet recorded in `lana_migrations`, each in its own transaction together with
 * its record. A table lock serialises concurrent migrators (two deploys, two test workers), so applying
 * twice, or at once from two places, is a no-op for the second.
 * Returns the names applied by this call.
 */
export async function migrate(db: Database, migrations?: Migration[]): Promise<string[]> {
  const all = migrations ?? (await loadMigrations());
  await db.query(
    `CREATE TABLE IF NOT EXISTS lana_migrations (
       name text PRIMARY KEY,
       applied_at timestamptz NOT NULL DEFAULT now()
     )`,
  );
  const applied: string[] = [];
  for (const migration of all) {
    const didApply = await db.transaction(async (tx) => {
      await tx.query('LOCK TABLE lana_migrations IN EXCLUSIVE MODE');
      const done = await tx.query('SELECT 1 FROM lana_migrations WHERE name = :name', {
        name: migration.name,
      });
      if (done.rowCount > 0) return false;
      for (const statement of splitSqlScript(migration.sql)) await tx.query(statement);
      await tx.query('INSERT INTO lana_migrations (name) VALUES (:name)', { name: migration.name });
      return true;
    });
    if (didApply) applied.push(migration.name);
  }
  return applied;
}
