import { randomUUID } from 'node:crypto';
import { uuid } from '../db/port.js';
import type { AttemptLifecycle, AttemptRef, CompletedAttempt } from './attempts.js';
import { assertUuid } from './ids.js';
import { type ClaimedJob, type JobRow, rowToClaimedJob } from './model.js';
import { DISPATCH_LEASE_SECONDS, type JobTypeMap } from './registry.js';
import * as sql from './sql.js';
import { type TrackerDeps, TrackerPart } from './tracker-part.js';

/** What `completeAndClaimBehind` did. */
export interface BehindResult {
  /** Whether the finished attempt's completion applied (false: fenced out). */
  completed: boolean;
  /**
   * The job that now holds the finished job's slot: the job that was behind it, begun (`begun`), or, with
   * none behind, the type's next due job claimed into a free slot under a dispatch lease. Null: neither
   * (the job behind was no longer this executor's, or the finished job's slot was not its own any more;
   * or nothing was due).
   */
  next: ClaimedJob | null;
  /** `next` is the job that was behind, begun here (its lease is its run's). */
  begun: boolean;
  /** The job claimed behind `next`, under a dispatch lease, holding no slot row. */
  behind: ClaimedJob | null;
}

/**
 * The AWS executor's claims behind the running job (`sql/behind.ts` says what a job behind is): one
 * statement completes a job, passes its slot to the job behind it (or claims the next into a free slot)
 * and claims the one after behind that.
 */
export class BehindClaims<M extends JobTypeMap, S> extends TrackerPart<M, S> {
  constructor(
    deps: TrackerDeps<M, S>,
    private readonly attempts: AttemptLifecycle<M, S>,
  ) {
    super(deps);
  }

  /**
   * Completes `done` and hands its slot on in ONE statement (`completeAndClaimBehindSql`): to `behindOf`
   * (the job claimed behind it, begun here) or, with none, to the type's next due job; then, with
   * `claimBehind`, claims the next due job behind that one. Safe to send again (its token).
   */
  async completeAndClaimBehind(
    done: CompletedAttempt,
    behindOf: AttemptRef | null,
    jobType: string,
    claimBehind: boolean,
  ): Promise<BehindResult> {
    assertUuid(done.id);
    if (behindOf) assertUuid(behindOf.id);
    const limits = await this.attempts.limitsWithSlots();
    const token = uuid(randomUUID());
    const durationMs = done.durationMs === undefined ? null : Math.max(0, Math.round(done.durationMs));
    const res = await this.db.query<JobRow & { applied: boolean; role: 'next' | 'behind' | null }>(
      sql.completeAndClaimBehindSql,
      this.params({
        id: uuid(done.id),
        attempt: done.attempt,
        duration_ms: durationMs,
        behind_id: behindOf ? uuid(behindOf.id) : null,
        behind_attempt: behindOf?.attempt ?? null,
        behind: claimBehind,
        token,
        claim_token: token,
        start_now: false,
        limits: limits ?? '{}',
        only_type: jobType,
        dispatch_lease_seconds: DISPATCH_LEASE_SECONDS,
      }),
    );
    const completed = res.rows[0]?.applied === true;
    if (completed) this.metrics.attemptFinished(jobType, 'completed', durationMs);
    const next = res.rows.find((r) => r.role === 'next');
    const behind = res.rows.find((r) => r.role === 'behind');
    return {
      completed,
      next: next ? rowToClaimedJob(next) : null,
      begun: next !== undefined && behindOf !== null && next.id === behindOf.id,
      behind: behind ? rowToClaimedJob(behind) : null,
    };
  }
}
