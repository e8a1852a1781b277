import type { ExecutionOutcome } from './outcomes.js';

/**
 * A job's lifecycle: `pending` until claimed, `running` while an attempt holds it, then `completed`,
 * `retrying` (due again after a failed attempt) or `failed` (no attempts left), and `cancelled` when an
 * operator stops it. The `jobs.status` CHECK lists exactly these (test/db/check-constraints.test.ts).
 */
export const JOB_STATUSES = ['pending', 'running', 'completed', 'failed', 'retrying', 'cancelled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

/**
 * What a claim returns and an executor sees: the fields needed to run and report an attempt. Claims
 * return only these (decoding fewer columns matters when a worker drains tens of thousands of jobs/s).
 */
export interface ClaimedJob<P = unknown> {
  id: string;
  jobType: string;
  payload: P;
  /** The attempt being run: its fencing token. */
  attempts: number;
  maxAttempts: number;
  priority: number;
  idempotencyKey: string | null;
  scheduledAt: Date;
  leaseExpiresAt: Date | null;
}

export const CLAIM_COLUMNS =
  'id, job_type, payload, attempts, max_attempts, priority, idempotency_key, scheduled_at, lease_expires_at';

export function rowToClaimedJob(r: JobRow): ClaimedJob {
  return {
    id: r.id,
    jobType: r.job_type,
    payload: r.payload,
    attempts: r.attempts,
    maxAttempts: r.max_attempts,
    priority: r.priority,
    idempotencyKey: r.idempotency_key,
    scheduledAt: r.scheduled_at,
    leaseExpiresAt: r.lease_expires_at,
  };
}

/** One element of `claimDueJobsAsDocumentSql`'s document. */
type ClaimTuple = [
  id: string,
  jobType: string,
  payload: unknown,
  attempts: number,
  maxAttempts: number,
  priority: number,
  idempotencyKey: string | null,
  scheduledAt: string,
  leaseExpiresAt: string | null,
];

/** Decodes a claim document (see `claimDueJobsAsDocumentSql`). */
export function claimedJobsFromDocument(document: string): ClaimedJob[] {
  const tuples = JSON.parse(document) as ClaimTuple[];
  const jobs: ClaimedJob[] = new Array(tuples.length);
  for (let i = 0; i < tuples.length; i++) {
    const t = tuples[i]!;
    jobs[i] = {
      id: t[0],
      jobType: t[1],
      payload: t[2],
      attempts: t[3],
      maxAttempts: t[4],
      priority: t[5],
      idempotencyKey: t[6],
      scheduledAt: new Date(t[7]),
      leaseExpiresAt: t[8] === null ? null : new Date(t[8]),
    };
  }
  return jobs;
}

export interface Job<P = unknown> extends ClaimedJob<P> {
  id: string;
  jobType: string;
  payload: P;
  status: JobStatus;
  /** Attempts started so far; during a run it is the number of the current attempt (its fencing token). */
  attempts: number;
  maxAttempts: number;
  priority: number;
  idempotencyKey: string | null;
  scheduledAt: Date;
  startedAt: Date | null;
  completedAt: Date | null;
  leaseExpiresAt: Date | null;
  lastError: string | null;
  createdAt: Date;
  updatedAt: Date;
}

/** One attempt of a job. */
export interface JobExecution {
  jobId: string;
  attempt: number;
  claimedAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  outcome: ExecutionOutcome | null;
  error: string | null;
  durationMs: number | null;
}

/** The columns every job query returns, in the shape `rowToJob` reads. */
export const JOB_COLUMNS = `id, job_type, payload, status, attempts, max_attempts, priority, idempotency_key,
  scheduled_at, started_at, completed_at, lease_expires_at, last_error, created_at, updated_at`;

export interface JobRow {
  [column: string]: unknown;
  id: string;
  job_type: string;
  payload: unknown;
  status: JobStatus;
  attempts: number;
  max_attempts: number;
  priority: number;
  idempotency_key: string | null;
  scheduled_at: Date;
  started_at: Date | null;
  completed_at: Date | null;
  lease_expires_at: Date | null;
  last_error: string | null;
  created_at: Date;
  updated_at: Date;
}

export function rowToJob(r: JobRow): Job {
  return {
    id: r.id,
    jobType: r.job_type,
    payload: r.payload,
    status: r.status,
    attempts: r.attempts,
    maxAttempts: r.max_attempts,
    priority: r.priority,
    idempotencyKey: r.idempotency_key,
    scheduledAt: r.scheduled_at,
    startedAt: r.started_at,
    completedAt: r.completed_at,
    leaseExpiresAt: r.lease_expires_at,
    lastError: r.last_error,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export interface ExecutionRow {
  [column: string]: unknown;
  job_id: string;
  attempt: number;
  claimed_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  outcome: ExecutionOutcome | null;
  error: string | null;
  duration_ms: number | null;
}

export function rowToExecution(r: ExecutionRow): JobExecution {
  return {
    jobId: r.job_id,
    attempt: r.attempt,
    claimedAt: r.claimed_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
    outcome: r.outcome,
    error: r.error,
    durationMs: r.duration_ms,
  };
}
