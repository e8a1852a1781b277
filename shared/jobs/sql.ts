/**
 * Every statement of the job lifecycle, kept by concern under `sql/`: enqueue, claim, attempts, operator.
 * Each is written out whole where it is defined, with a doc comment saying what it guarantees; only the
 * console's filtered statements are built (from a filter's shape). One dialect (PostgreSQL 15), named
 * parameters, no array parameters (lists travel as one JSON document), explicit casts: the same text runs
 * through node-postgres and the RDS Data API. Each lifecycle step is ONE statement, because every Data API
 * call autocommits.
 *
 * `COALESCE(CAST(:now AS timestamptz), now())` is the injectable clock: :now NULL means the database's own
 * time.
 */
export * from './sql/attempts.js';
export * from './sql/behind.js';
export * from './sql/claim.js';
export * from './sql/enqueue.js';
export * from './sql/operator.js';
export * from './sql/pauses.js';
export * from './sql/schedules.js';
