import type { TestProject } from 'vitest/node';
import { type EmbeddedServer, startEmbeddedPostgres } from '../../shared/runtime/embedded-postgres.js';

declare module 'vitest' {
  export interface ProvidedContext {
    adminDatabaseUrl: string;
  }
}

let embedded: EmbeddedServer | undefined;

/**
 * Tests run against a real PostgreSQL: the server named by DATABASE_URL when set (CI also runs the suite
 * against the machine's PostgreSQL 15), else an embedded server started here.
 */
export async function setup(project: TestProject): Promise<void> {
  let adminUrl = process.env.DATABASE_URL;
  if (!adminUrl) {
    embedded = await startEmbeddedPostgres({ dataDir: '.lana-jobs/test-pgdata' });
    adminUrl = embedded.adminUrl;
  }
  project.provide('adminDatabaseUrl', adminUrl);
}

export async function teardown(): Promise<void> {
  await embedded?.stop();
}
