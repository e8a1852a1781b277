import { type Queryable, type SqlParams, uuid } from '../db/port.js';
import type { WorkerClaim, WorkerSlots } from './attempts.js';
import { SLOT_LEASE_SECONDS } from './attempts.js';
import { claimedJobsFromDocument } from './model.js';
import { DISPATCH_LEASE_SECONDS } from './registry.js';
import * as sql from './sql.js';

/**
 * A local worker's claim when types have limits (`claimLimitedForWorkerSql`). A worker that needs not settle
 * its holds first tries the claim within them (`claimWithinHoldsSql`: no slot read or written); when that
 * does not apply (a limited type due that it holds no slot of, a paused, keyed, rate-limited or
 * several-priority type due), the full claim instead; when it left jobs due of a type the worker may hold
 * more slots of, the full claim after it, for the rest.
 */
export async function claimWithSlots(
  db: Queryable,
  params: (extra: SqlParams) => SqlParams,
  limit: number,
  limits: string,
  slots: WorkerSlots,
): Promise<WorkerClaim> {
  if (slots.settle !== false || slots.withinHolds === false)
    return fullClaim(db, params, limit, limits, slots);
  const res = await db.query<{
    applies: boolean;
    jobs: string;
    next_due_at: Date | null;
    left_behind: boolean;
    wants_slots: boolean;
    lasting_miss: boolean;
  }>(
    sql.claimWithinHoldsSql,
    // Begun at once, as the full claim begins them (no claim token: as lana_jobs_claim_slotted's).
    params({
      limit,
      limits,
      concurrency: slots.concurrency,
      in_hand: inHandDocument(slots),
      start_now: true,
      claim_token: null,
      dispatch_lease_seconds: DISPATCH_LEASE_SECONDS,
    }),
  );
  const row = res.rows[0];
  if (!row?.applies) {
    const full = await fullClaim(db, params, limit, limits, slots);
    return row?.lasting_miss ? { ...full, missedWithinHolds: true } : full;
  }
  const jobs = claimedJobsFromDocument(row.jobs);
  const held = { ...slots.held };
  if (jobs.length >= limit) return { jobs, nextDueAt: undefined, leftBehind: false, held };
  if (!row.wants_slots)
    return { jobs, nextDueAt: row.next_due_at ?? null, leftBehind: row.left_behind, held };
  // More of a limited type is due than its held slots took, and the worker may hold more of them: the full
  // claim takes them (with what was just claimed in hand).
  const inHand = { ...slots.inHand };
  for (const job of jobs) inHand[job.jobType] = (inHand[job.jobType] ?? 0) + 1;
  const rest = await fullClaim(db, params, limit - jobs.length, limits, { ...slots, inHand });
  return { ...rest, jobs: [...jobs, ...rest.jobs] };
}

function inHandDocument(slots: WorkerSlots): string {
  return JSON.stringify({
    ...slots.inHand,
    $linger: Object.fromEntries((slots.lingering ?? []).map((type) => [type, 1])),
    ...(slots.settle === false ? { $settle: false, $held: slots.held ?? {} } : {}),
  });
}

/** The full claim (`claimLimitedForWorkerSql`): takes slots as needed, and settles unless told not to. */
async function fullClaim(
  db: Queryable,
  params: (extra: SqlParams) => SqlParams,
  limit: number,
  limits: string,
  slots: WorkerSlots,
): Promise<WorkerClaim> {
  const res = await db.query<{
    jobs: string;
    next_due_at: Date | null;
    left_behind: boolean;
    rate_slot_free_at: Date | null;
    held: string;
  }>(
    sql.claimLimitedForWorkerSql,
    params({
      limit,
      limits,
      worker: uuid(slots.worker),
      concurrency: slots.concurrency,
      in_hand: inHandDocument(slots),
      slot_lease_seconds: SLOT_LEASE_SECONDS,
    }),
  );
  const row = res.rows[0];
  const jobs = claimedJobsFromDocument(row?.jobs ?? '[]');
  const held = JSON.parse(row?.held ?? '{}') as Record<string, number>;
  if (jobs.length >= limit) return { jobs, nextDueAt: undefined, leftBehind: false, held };
  // Jobs over a type's rate are due but not claimable before a rate slot frees: ask again then.
  const times = [row?.next_due_at, row?.rate_slot_free_at].filter((d): d is Date => d != null);
  const nextDueAt =
    times.length === 0 ? null : new Date(Math.min(...times.map((d) => new Date(d).getTime())));
  return { jobs, nextDueAt, leftBehind: row?.left_behind ?? false, held };
}
