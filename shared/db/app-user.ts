import type { Database } from './port.js';

/** The table that records applied migrations: the application user may not touch it. */
const MIGRATIONS_TABLE = 'lana_migrations';

export interface AppUser {
  /** A PostgreSQL role name: lowercase letters, digits and underscores. */
  name: string;
  /** Its password, from its secret: used only when the role is created (rotation owns it after that). */
  password: string;
}

/**
 * Creates the application user if it does not exist yet and grants it DML, and only DML, on every table
 * and view of the `public` schema but the migrations table (shared/db/migrations/README.md). Run as the master
 * user after the migrations, on every deploy that changes them, so a new table is granted at once.
 * Idempotent. The password never appears in SQL text: it travels as a parameter into a transaction-local
 * setting that the CREATE ROLE reads (utility statements take no parameters).
 */
export async function provisionAppUser(db: Database, user: AppUser): Promise<{ created: boolean }> {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(user.name))
    throw new Error(`application user name "${user.name}" must be lowercase letters, digits and underscores`);
  if (!user.password) throw new Error('the application user needs a password');
  return db.transaction(async (tx) => {
    const existing = await tx.query('SELECT 1 FROM pg_roles WHERE rolname = :name', { name: user.name });
    const created = existing.rowCount === 0;
    if (created) {
      await tx.query(`SELECT set_config('lana.app_user_password', :password, true)`, {
        password: user.password,
      });
      // The Data API logs in with SCRAM only (PostgreSQL 14+).
      await tx.query(`SET LOCAL password_encryption = 'scram-sha-256'`);
      await tx.query(
        `DO $$ BEGIN
           EXECUTE format('CREATE ROLE ${user.name} LOGIN PASSWORD %L', current_setting('lana.app_user_password'));
         END $$`,
      );
      await tx.query(`SELECT set_config('lana.app_user_password', '', true)`);
    }
    await tx.query(`GRANT USAGE ON SCHEMA public TO ${user.name}`);
    await tx.query(`REVOKE CREATE ON SCHEMA public FROM ${user.name}`);
    // One GRANT per table or view, from the catalogue: every table but the migrations' own, and every view
    // (what a view accepts beyond SELECT is up to its INSTEAD OF triggers, e.g. `job_executions`').
    await tx.query(
      `DO $$ DECLARE t record; BEGIN
         FOR t IN SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public' AND tablename <> '${MIGRATIONS_TABLE}'
                  UNION ALL SELECT viewname FROM pg_views WHERE schemaname = 'public' LOOP
           EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I TO ${user.name}', t.name);
         END LOOP;
       END $$`,
    );
    await tx.query(`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO ${user.name}`);
    await tx.query(`REVOKE ALL ON ${MIGRATIONS_TABLE} FROM ${user.name}`);
    // The multi-user rotation's second user (created by the rotation as `<name>_clone`) works through
    // membership of this one, so it follows every grant above, including those of later deploys.
    await tx.query(
      `DO $$ BEGIN
         IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${user.name}_clone') THEN
           EXECUTE 'GRANT ${user.name} TO ${user.name}_clone';
         END IF;
       END $$`,
    );
    return { created };
  });
}
