import { DatabaseError } from '../db/port.js';
import type { Debounce } from './job-input.js';
import type { Job } from './model.js';

/** The rows the enqueue statements take and answer (`enqueue.ts`), and the job a new row stands for. */

/** The insert's answer: a summary row (part 0), then the ids of inserted keyed rows in chunks. */
export interface InsertAnswerRow {
  [column: string]: unknown;
  part: number;
  inserted: number | null;
  created_at: Date | null;
  keyed_ids: string | null;
}

/** What the eager insert returns of its job: the statement's time, from which its start and lease follow. */
export interface StartedRow {
  [column: string]: unknown;
  created_at: Date;
}

/** A job's row as the insert takes it (one element of its JSON array). */
export interface NewJobRow {
  ord: number;
  id: string;
  job_type: string;
  payload: unknown;
  scheduled_at: string | null;
  max_attempts: number;
  backoff_base_seconds: number;
  backoff_cap_seconds: number;
  lease_seconds: number;
  priority: number;
  idempotency_key: string | null;
  /** The job's key under its type's per-key limit (`concurrencyKey`), from its payload. */
  concurrency_key: string | null;
}

/** A validated job: its row, and its payload's JSON text (measured for the size limit, parsed for the result). */
export interface ValidatedJob {
  row: NewJobRow;
  payloadJson: string;
  debounce: Debounce | null;
}

/** A new job as stored: its input, pending, no attempt yet; due at its runAt or when it was created. */
export function newJobFromInput({ row: input, payloadJson }: ValidatedJob, createdAt: Date): Job {
  return {
    id: input.id,
    jobType: input.job_type,
    // As stored: JSON, not the caller's object.
    payload: JSON.parse(payloadJson),
    status: 'pending',
    attempts: 0,
    maxAttempts: input.max_attempts,
    priority: input.priority,
    idempotencyKey: input.idempotency_key,
    scheduledAt: input.scheduled_at === null ? createdAt : new Date(input.scheduled_at),
    startedAt: null,
    completedAt: null,
    leaseExpiresAt: null,
    lastError: null,
    createdAt,
    updatedAt: createdAt,
  };
}

/** A unique violation of the jobs' primary key: an insert met a job id that already exists. */
export function isDuplicateJobId(err: unknown): boolean {
  return err instanceof DatabaseError && err.code === '23505' && err.message.includes('"jobs_pkey"');
}

export function keyOf(r: { job_type: string; idempotency_key: string | null }): string {
  return `${r.job_type}\u0000${r.idempotency_key}`;
}
