import type { Context, Env, Hono } from 'hono';
import type { LendingTracker } from '../job-types/index.js';
import { limitsText } from '../jobs/describe.js';
import { MAX_PAUSE_REASON_LENGTH, MAX_PAUSED_BY_LENGTH } from '../jobs/pauses.js';
import { type Html, html } from './html.js';

/**
 * The console's pause and resume of job types: the `/types` page lists every type with its pause state and
 * a Pause or Resume button (POST with the console's CSRF token, checked by the app's middleware for every
 * POST). The rules and errors are the tracker's, as for the CLI: an unknown type is bad input, nothing
 * written.
 */
export interface PauseRoutesOptions<E extends Env> {
  tracker: LendingTracker;
  csrfField: Html;
  page: (c: Context<E>, title: string, body: Html) => string;
  /** See `ConsoleOptions.wake`. */
  wake?: (due: string) => Promise<unknown>;
}

export function mountPauseRoutes<E extends Env>(app: Hono<E>, options: PauseRoutesOptions<E>): void {
  const { tracker, csrfField, page } = options;

  app.get('/types', async (c) => {
    const paused = new Map((await tracker.pausedTypes()).map((p) => [p.jobType, p]));
    const done = c.req.query('done');
    const rows = tracker.registry.list().map((t) => {
      const p = paused.get(t.type);
      const action = p
        ? html`<form method="post" action="/types/${t.type}/resume">${csrfField}<button type="submit" id="resume-${t.type}">Resume</button></form>`
        : html`<form method="post" action="/types/${t.type}/pause">${csrfField}<input name="reason" maxlength="${MAX_PAUSE_REASON_LENGTH}" placeholder="reason"> <input name="by" maxlength="${MAX_PAUSED_BY_LENGTH}" placeholder="your name" required> <button type="submit" id="pause-${t.type}">Pause</button></form>`;
      return html`<tr><td>${t.type}</td><td>${limitsText(t)}</td><td>${p ? html`<strong class="error-text">paused</strong> by ${p.pausedBy} since ${p.pausedAt}${p.reason ? html`: ${p.reason}` : ''}` : 'running'}</td><td>${action}</td></tr>`;
    });
    return c.html(
      page(
        c,
        'Job types',
        html`${done ? html`<p id="done">${done === 'pause' ? 'Paused: its due jobs wait; running jobs finish.' : 'Resumed: its due jobs are claimed again.'}</p>` : ''}
<p class="muted">A paused type's due jobs are not claimed until it is resumed; jobs already running finish; nothing is cancelled or counted.</p>
<p class="muted">Limits: how many of a type's jobs run at once, start per time, and run at once per key (<code>1 per facilityId</code>: one job per facility at a time, other facilities' jobs flow).</p>
<table><thead><tr><th>type</th><th>limits</th><th>state</th><th></th></tr></thead><tbody>${rows}</tbody></table>`,
      ),
    );
  });

  app.post('/types/:type/pause', async (c) => {
    const form = await c.req.parseBody();
    const by = typeof form.by === 'string' ? form.by : '';
    const reason = typeof form.reason === 'string' ? form.reason : undefined;
    await tracker.pauseType(c.req.param('type'), { by, reason });
    return c.redirect('/types?done=pause', 303);
  });

  app.post('/types/:type/resume', async (c) => {
    // Local workers are woken by the resume itself (NOTIFY); on AWS fetch-ready is woken here.
    if (await tracker.resumeType(c.req.param('type'))) await options.wake?.("the type's jobs run");
    return c.redirect('/types?done=resume', 303);
  });
}
