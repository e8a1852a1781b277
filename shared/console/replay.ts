import type { Context, Env, Hono } from 'hono';
import type { LendingTracker } from '../job-types/index.js';
import { JobInputError } from '../jobs/errors.js';
import { parsePayloadText } from '../jobs/job-input.js';
import { MAX_CHANGED_BY_LENGTH, type PayloadChange } from '../jobs/operator.js';
import { type Html, html } from './html.js';
import { renderJob } from './pages.js';

/**
 * Replay with a changed payload from the console: a failed or cancelled job's page has a form with its
 * payload as JSON and who changes it; the POST goes through the same tracker call as `lana-jobs retry <id>
 * --payload` (`retryWithPayload`: the type's schema, the size limit, the old payload kept in
 * `job_payload_changes` with who changed it, one statement). A bad payload re-shows the form with one
 * error, status 400, and nothing written. The console has no accounts (one shared token), so the person
 * is named in the form, as for a pause.
 */
export interface ReplayRoutesOptions<E extends Env> {
  tracker: LendingTracker;
  csrfField: Html;
  page: (c: Context<E>, title: string, body: Html) => string;
  /** See `ConsoleOptions.wake`. */
  wake?: (due: string) => Promise<unknown>;
}

/** The replay form's fields as the operator left them, and the error to show above them. */
export interface ReplayFormState {
  payload: string;
  by: string;
  error: string | null;
}

/** The payload changes of a job's replays, oldest first (nothing when none). */
export function payloadHistory(changes: readonly PayloadChange[]): Html | string {
  return changes.length === 0
    ? ''
    : html`<h2>Payload changes</h2><table id="payload-changes"><thead><tr><th>changed at (UTC)</th><th>by</th><th>payload before</th><th>payload after</th></tr></thead><tbody>${changes.map((c) => html`<tr><td>${c.changedAt}</td><td><bdi dir="auto">${c.changedBy}</bdi></td><td><code dir="ltr">${JSON.stringify(c.previousPayload)}</code></td><td><code dir="ltr">${JSON.stringify(c.payload)}</code></td></tr>`)}</tbody></table>`;
}

/** The form of a failed or cancelled job's page, after its payload history. */
export function replayForm(
  jobId: string,
  csrfField: Html,
  state: ReplayFormState,
  changes: readonly PayloadChange[],
): Html {
  return html`${payloadHistory(changes)}<h2>Retry with a changed payload</h2>
${state.error ? html`<p class="error" id="replay-error">${state.error}</p><p>Nothing was changed.</p>` : ''}
<form method="post" action="/jobs/${jobId}/replay" id="replay-form">${csrfField}
<label>payload (JSON, checked against the type's schema)<br><textarea name="payload" rows="8" cols="80" dir="ltr">${state.payload}</textarea></label><br>
<label>your name <input name="by" value="${state.by}" maxlength="${MAX_CHANGED_BY_LENGTH}" required></label>
<button type="submit" id="replay">Retry with this payload</button>
<p class="muted hint">The job goes back to the queue, due now, with a fresh attempt budget; the payload it had stays in its history.</p></form>`;
}

export function mountReplayRoutes<E extends Env>(app: Hono<E>, options: ReplayRoutesOptions<E>): void {
  const { tracker, csrfField, page } = options;

  app.post('/jobs/:id/replay', async (c) => {
    const id = c.req.param('id');
    const form = await c.req.parseBody();
    const payloadText = typeof form.payload === 'string' ? form.payload : '';
    const by = typeof form.by === 'string' ? form.by : '';
    try {
      // The same reading of payload text as the CLI's `--payload` (`job-input.ts`), then the same call.
      await tracker.retryWithPayload(id, parsePayloadText(payloadText), by);
    } catch (err) {
      // An unknown id or a job that cannot be retried is the app's error page; a bad payload or name
      // keeps the operator's text in the form, with the reason above it.
      if (!(err instanceof JobInputError) || err.code === 'job_not_found') throw err;
      const job = await tracker.requireJob(id);
      const [executions, changes] = await Promise.all([
        tracker.getExecutions(id),
        tracker.getPayloadChanges(id),
      ]);
      const state = { payload: payloadText, by, error: err.message };
      return c.html(
        page(
          c,
          `Job ${job.id}`,
          renderJob(job, executions, csrfField, undefined, replayForm(job.id, csrfField, state, changes)),
        ),
        400,
      );
    }
    await options.wake?.('the job runs');
    return c.redirect(`/jobs/${encodeURIComponent(id)}?done=replay`, 303);
  });
}
