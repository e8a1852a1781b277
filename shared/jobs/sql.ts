/**
 * Every statement of the job lifecycle, kept by concern under `sql/`: enqueue, claim, attempts, operator
 * (and the pieces they share in `sql/common.ts`). One dialect (PostgreSQL 15), named parameters, no array
 * parameters (lists travel as one JSON document), explicit casts: the same text runs through node-postgres
 * and the RDS Data API. Each lifecycle step is ONE statement, because every Data API call autocommits.
 *
 * `:now` is the injectable clock: NULL means the database's own `now()`.
 */
export * from './sql/attempts.js';
export * from './sql/claim.js';
export * from './sql/enqueue.js';
export * from './sql/operator.js';
