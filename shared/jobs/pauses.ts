import { JobInputError } from './errors.js';
import type { JobTypeMap } from './registry.js';
import * as sql from './sql.js';
import { TrackerPart } from './tracker-part.js';

/** A paused job type: none of its due jobs is claimed until it is resumed. */
export interface JobTypePause {
  jobType: string;
  pausedBy: string;
  pausedAt: Date;
  reason: string | null;
}

/** Kept in `job_type_pauses`: bounded as the table's checks are. */
export const MAX_PAUSED_BY_LENGTH = 200;
export const MAX_PAUSE_REASON_LENGTH = 1000;

export type PauseRow = {
  job_type: string;
  paused_by: string;
  paused_at: Date;
  reason: string | null;
};

export const toPause = (r: PauseRow): JobTypePause => ({
  jobType: r.job_type,
  pausedBy: r.paused_by,
  pausedAt: new Date(r.paused_at),
  reason: r.reason,
});

/**
 * Pause and resume a job type (migration 0015). A pause stops every claim (local workers, fetch-ready, an
 * executor's next job) from taking the type's due jobs from the next claim on; jobs already running finish
 * and report as usual; nothing is cancelled, failed or counted. Only registered types can be paused, so a
 * typo is refused instead of pausing nothing.
 */
export class JobTypePauses<M extends JobTypeMap, S> extends TrackerPart<M, S> {
  /** Pauses `jobType`. Pausing a paused type keeps the pause in force (`created` false). */
  async pause(
    jobType: string,
    options: { by: string; reason?: string },
  ): Promise<{ pause: JobTypePause; created: boolean }> {
    this.registry.require(jobType);
    const by = options.by.trim();
    if (by === '' || by.length > MAX_PAUSED_BY_LENGTH)
      throw new JobInputError('invalid_option', `who pauses must be 1 to ${MAX_PAUSED_BY_LENGTH} characters`);
    const reason = options.reason?.trim() || null;
    if (reason !== null && reason.length > MAX_PAUSE_REASON_LENGTH)
      throw new JobInputError(
        'invalid_option',
        `the reason must be at most ${MAX_PAUSE_REASON_LENGTH} characters`,
      );
    const res = await this.db.query<PauseRow & { created: boolean }>(
      sql.pauseJobTypeSql,
      this.params({ job_type: jobType, paused_by: by, reason }),
    );
    const row = res.rows[0];
    if (!row) throw new Error(`pausing ${jobType} answered no row`);
    return { pause: toPause(row), created: row.created };
  }

  /** Resumes `jobType`: the pause it ended, or null when it was not paused. Wakes the local workers. */
  async resume(jobType: string): Promise<JobTypePause | null> {
    this.registry.require(jobType);
    const res = await this.db.query<PauseRow>(sql.resumeJobTypeSql, this.params({ job_type: jobType }));
    const row = res.rows[0];
    return row ? toPause(row) : null;
  }

  /** Every paused type, by name. */
  async list(): Promise<JobTypePause[]> {
    const res = await this.db.query<PauseRow>(sql.pausedJobTypesSql);
    return res.rows.map(toPause);
  }
}
