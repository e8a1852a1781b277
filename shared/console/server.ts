import { randomBytes } from 'node:crypto';
import { type ServerType, serve } from '@hono/node-server';
import { type Context, Hono } from 'hono';
import type { LendingTracker } from '../job-types/index.js';
import { errorMessage, JobInputError } from '../jobs/errors.js';
import { assertUuid, createdJobDueNow } from '../jobs/tracker.js';
import { latestTick, nextTick, toEventBridgeExpression } from '../schedules/cron.js';
import { jobForTick, type RecurringSchedule } from '../schedules/definitions.js';
import { enqueueForm, enqueueInputFromForm } from './enqueue-form.js';
import { ConsoleInputError } from './errors.js';
import {
  BULK_ELIGIBLE,
  bulkAction,
  bulkActionsFor,
  describeFilter,
  FILTER_FIELDS,
  filterForm,
  filterQueryString,
  nonEmpty,
  parseFilter,
} from './filters.js';
import { bodySizeGuard, csrfGuard, tokenGuard, type Vars } from './guard.js';
import { Html, html } from './html.js';
import { CSS, JOBS_COLUMNS, jobRow, renderJob, renderOverview, userText } from './pages.js';
import { mountPauseRoutes } from './pauses.js';
import { mountReplayRoutes, payloadHistory, replayForm } from './replay.js';

/**
 * The operator console: server-rendered pages over the job tracker, the same functions the CLI calls, so
 * the same rules and errors apply. It holds no SQL. Every state change is a POST carrying the console's
 * CSRF token; with a token configured, every request must present it. The parts: `guard.ts` (token, body
 * size, CSRF), `filters.ts` (the jobs filter), `enqueue-form.ts` (the form built from a payload schema),
 * `pages.ts` (rendering); the routes are here.
 */
export interface ConsoleOptions {
  tracker: LendingTracker;
  schedules: readonly RecurringSchedule[];
  /** Required for every request when set (bearer header, cookie, or `?token=` once). */
  token?: string;
  /** How often the overview refreshes itself. */
  refreshMs?: number;
  /** Where the console reads from, shown in the header. */
  description?: string;
  /**
   * Called after a write that made jobs due now (an enqueue, a retry, a resume), naming what runs, for a
   * warning should it fail. On AWS (`--data-api`) it wakes fetch-ready, which otherwise claims them at its
   * next minute; locally it is not needed (the insert trigger's NOTIFY wakes the workers).
   */
  wake?: (due: string) => Promise<unknown>;
}

/**
 * A request's query fields, decoded as a form is (WHATWG): bytes that are not UTF-8 become U+FFFD, which
 * the parsers then refuse, instead of being kept as the literal `%FF`.
 */
function queryReader(c: Context<Vars>): (key: string) => string | undefined {
  const params = new URL(c.req.url).searchParams;
  return (key) => params.get(key) ?? undefined;
}

export function createConsoleApp(options: ConsoleOptions): Hono<Vars> {
  const { tracker } = options;
  const csrf = randomBytes(24).toString('base64url');
  const refreshMs = options.refreshMs ?? 5000;
  const app = new Hono<Vars>();

  const shell = (title: string, body: Html, nonce: string, extraScript?: Html) => html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title} · lana-jobs console</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>${new Html(CSS)}</style></head>
<body><header><strong>lana-jobs</strong>
<nav><a href="/">Overview</a><a href="/jobs">Jobs</a><a href="/failures">Failures</a><a href="/schedules">Schedules</a><a href="/types">Types</a><a href="/enqueue">Enqueue</a></nav>
<span class="muted">${options.description ?? ''}</span></header>
<main><h1><bdi dir="auto">${title}</bdi></h1>${body}</main>${extraScript ? html`<script nonce="${nonce}">${extraScript}</script>` : ''}</body></html>`;
  const page = (c: Context<Vars>, title: string, body: Html, script?: Html) =>
    shell(title, body, c.get('nonce'), script).text;
  const csrfField = html`<input type="hidden" name="_csrf" value="${csrf}">`;

  app.use('*', tokenGuard(options.token));
  // The size limit comes before anything reads a body (the CSRF check below reads the form).
  app.use('*', bodySizeGuard());
  app.use(
    '*',
    csrfGuard(csrf, (c) =>
      c.html(
        page(
          c,
          'Refused',
          html`<p class="error">Refused: this request did not come from a console page (another origin, or a missing or wrong CSRF token). Nothing was changed.</p>`,
        ),
        403,
      ),
    ),
  );

  app.onError((err, c) => {
    const bad = err instanceof JobInputError || err instanceof ConsoleInputError;
    const notFound = err instanceof JobInputError && err.code === 'job_not_found';
    return c.html(
      page(
        c,
        bad ? 'Bad input' : 'Error',
        html`<p class="error" id="error">${bad ? '' : 'Error: '}${errorMessage(err)}</p><p>Nothing was changed.</p>`,
      ),
      notFound ? 404 : bad ? 400 : 500,
    );
  });

  // Overview.
  const overviewFragment = async () => {
    const stats = await tracker.stats();
    return renderOverview(stats);
  };
  app.get('/', async (c) => {
    const live = await overviewFragment();
    const script = new Html(`
const live = document.getElementById('live');
async function refresh() {
  try {
    const res = await fetch('/overview/live', { credentials: 'same-origin' });
    if (res.ok) { live.innerHTML = await res.text(); live.dataset.refreshedAt = String(Date.now()); }
  } catch {}
}
setInterval(refresh, ${Number(refreshMs)});`);
    return c.html(page(c, 'Overview', html`<div id="live">${live}</div>`, script));
  });
  app.get('/overview/live', async (c) => c.html((await overviewFragment()).text));

  // Jobs.
  app.get('/jobs', async (c) => {
    const id = c.req.query('id')?.trim();
    if (id) {
      assertUuid(id);
      return c.redirect(`/jobs/${encodeURIComponent(id)}`, 303);
    }
    const { query, form } = parseFilter(queryReader(c));
    const before = nonEmpty(c.req.query('before'));
    const result = await tracker.listJobsPage(query, { before, limit: 50 });
    const qs = filterQueryString(form);
    return c.html(
      page(
        c,
        'Jobs',
        html`${filterForm(form, tracker)}
<table class="jobs">${JOBS_COLUMNS}<thead><tr><th>id</th><th>type</th><th>status</th><th>attempts</th><th>key</th><th>created (UTC)</th><th>scheduled (UTC)</th><th>last error</th></tr></thead><tbody>
${result.jobs.length === 0 ? html`<tr><td colspan="8" class="muted">no jobs match</td></tr>` : result.jobs.map(jobRow)}
</tbody></table>
<p class="pager">${before ? html`<a href="/jobs?${qs}">newest</a> ` : ''}${result.nextBefore ? html`<a href="/jobs?${qs}${qs ? '&' : ''}before=${encodeURIComponent(result.nextBefore)}" id="older">older →</a>` : ''}</p>
<p class="bulk">${bulkActionsFor(form).map((a) => html`<a class="button" id="bulk-${a}" href="/jobs/bulk?action=${a}${qs ? '&' : ''}${qs}">${a === 'retry' ? 'Retry' : 'Cancel'} all matching…</a> `)}</p>`,
      ),
    );
  });

  app.get('/jobs/bulk', async (c) => {
    const action = bulkAction(c.req.query('action'));
    const { query, form } = parseFilter(queryReader(c));
    const count = await tracker.countForBulk(query, action);
    const verb = action === 'retry' ? 'Retry' : 'Cancel';
    const eligible = BULK_ELIGIBLE[action].join(', ').replace(/, (\w+)$/, ' or $1');
    return c.html(
      page(
        c,
        `${verb} matching jobs`,
        html`<p>Filter: <code>${describeFilter(form)}</code></p>
<p id="bulk-count">This will ${action} <strong>${count}</strong> ${eligible} job(s).</p>
${
  count === 0
    ? html`<p class="muted">Nothing to do.</p>`
    : html`<form method="post" action="/jobs/bulk">${csrfField}<input type="hidden" name="action" value="${action}">
${FILTER_FIELDS.map((k) => html`<input type="hidden" name="${k}" value="${form[k] ?? ''}">`)}
<button type="submit" id="confirm">${verb} ${count} job(s)</button> <a href="/jobs?${filterQueryString(form)}">back</a></form>`
}`,
      ),
    );
  });

  app.post('/jobs/bulk', async (c) => {
    const body = await c.req.parseBody();
    const field = (k: string) => (typeof body[k] === 'string' ? (body[k] as string) : undefined);
    const action = bulkAction(field('action'));
    const { query, form } = parseFilter(field);
    const ids = action === 'retry' ? await tracker.retryMatching(query) : await tracker.cancelMatching(query);
    if (action === 'retry' && ids.length > 0) await options.wake?.('the jobs run');
    return c.html(
      page(
        c,
        action === 'retry' ? 'Retried' : 'Cancelled',
        html`<p id="bulk-result">${action === 'retry' ? 'Retried' : 'Cancelled'} ${ids.length} job(s) matching <code>${describeFilter(form)}</code>.</p><p><a href="/jobs?${filterQueryString(form)}">back to the list</a></p>`,
      ),
    );
  });

  app.get('/jobs/:id', async (c) => {
    const id = c.req.param('id');
    const job = await tracker.requireJob(id);
    const [executions, changes] = await Promise.all([
      tracker.getExecutions(id),
      tracker.getPayloadChanges(id),
    ]);
    const done = c.req.query('done');
    const canReplay = job.status === 'failed' || job.status === 'cancelled';
    const replay = canReplay
      ? replayForm(
          job.id,
          csrfField,
          { payload: JSON.stringify(job.payload, null, 2), by: '', error: null },
          changes,
        )
      : payloadHistory(changes);
    return c.html(page(c, `Job ${job.id}`, renderJob(job, executions, csrfField, done, replay)));
  });

  for (const action of ['retry', 'cancel'] as const) {
    app.post(`/jobs/:id/${action}`, async (c) => {
      const id = c.req.param('id');
      if (action === 'retry') {
        await tracker.retry(id);
        await options.wake?.('the job runs');
      } else await tracker.cancel(id);
      return c.redirect(`/jobs/${encodeURIComponent(id)}?done=${action}`, 303);
    });
  }

  mountPauseRoutes(app, { tracker, csrfField, page, wake: options.wake });
  mountReplayRoutes(app, { tracker, csrfField, page, wake: options.wake });

  // Enqueue.
  app.get('/enqueue', (c) => {
    const type = nonEmpty(c.req.query('type'));
    return c.html(page(c, 'Enqueue a job', enqueueForm(tracker, type, csrfField, {}, null)));
  });
  app.post('/enqueue', async (c) => {
    const body = await c.req.parseBody();
    const fields: Record<string, string> = {};
    for (const [k, v] of Object.entries(body)) if (typeof v === 'string') fields[k] = v;
    // The type as given (a form's select sends it exactly), so a near-miss is refused as in the CLI.
    const type = fields.type === '' ? undefined : fields.type;
    try {
      if (type === undefined) throw new ConsoleInputError('choose a job type');
      const input = enqueueInputFromForm(tracker, type, fields);
      const [result] = await tracker.enqueueUntyped([input]);
      if (createdJobDueNow([result!], tracker.clock.now() ?? new Date()))
        await options.wake?.('the job runs');
      const done = result!.created ? 'enqueued' : input.debounce ? 'debounced' : 'existing';
      return c.redirect(`/jobs/${result!.job.id}?done=${done}`, 303);
    } catch (err) {
      if (!(err instanceof JobInputError || err instanceof ConsoleInputError)) throw err;
      return c.html(
        page(c, 'Enqueue a job', enqueueForm(tracker, type, csrfField, fields, err.message)),
        400,
      );
    }
  });

  // Failures.
  app.get('/failures', async (c) => {
    const groups = await tracker.failureGroups(100);
    return c.html(
      page(
        c,
        'Failures',
        html`<p class="muted">Failed and retrying jobs grouped by error message.</p>
<table><thead><tr><th>error</th><th>jobs</th><th>failed</th><th>retrying</th><th>newest example</th></tr></thead><tbody>
${groups.length === 0 ? html`<tr><td colspan="5" class="muted">no failed or retrying jobs</td></tr>` : groups.map((g) => html`<tr><td class="error-text">${g.error === null ? '(no message)' : userText(g.error)}</td><td>${g.count}</td><td>${g.failed}</td><td>${g.retrying}</td><td>${g.newest ? html`<a href="/jobs/${g.newest.id}">${g.newest.jobType} ${g.newest.id}</a>` : ''}</td></tr>`)}
</tbody></table>`,
      ),
    );
  });

  // Schedules.
  app.get('/schedules', async (c) => {
    const now = tracker.clock.now() ?? new Date();
    const rows = await Promise.all(
      options.schedules.map(async (s) => {
        const last = latestTick(s.expression, now);
        const lastJob = last ? jobForTick(s, last) : null;
        const job = lastJob ? await tracker.getJobByKey(lastJob.type, lastJob.idempotencyKey!) : null;
        return html`<tr><td>${s.name}</td><td>${s.description}</td><td><code>${toEventBridgeExpression(s.expression)}</code></td><td>${nextTick(s.expression, now)}</td><td>${last ?? '—'}</td><td>${job ? html`<a href="/jobs/${job.id}">${job.status}</a>` : html`<span class="muted">no job for it</span>`}</td></tr>`;
      }),
    );
    return c.html(
      page(
        c,
        'Schedules',
        html`<table><thead><tr><th>name</th><th>description</th><th>expression (UTC)</th><th>next fire</th><th>last tick</th><th>last tick's job</th></tr></thead><tbody>${rows}</tbody></table>`,
      ),
    );
  });

  app.notFound((c) => c.html(page(c, 'Not found', html`<p class="error">No such page.</p>`), 404));
  return app;
}

export interface RunningConsole {
  url: string;
  close(): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/**
 * Starts the console. It binds 127.0.0.1 unless `host` says otherwise; another address requires a token
 * (every request without it is refused).
 */
export async function startConsole(
  options: ConsoleOptions & { host?: string; port?: number },
): Promise<RunningConsole> {
  const host = options.host ?? '127.0.0.1';
  if (!LOOPBACK.has(host) && (options.token === undefined || options.token.length < 16)) {
    throw new ConsoleInputError(
      `binding ${host} (not loopback) needs a token of at least 16 characters (--token or JOBS_CONSOLE_TOKEN)`,
    );
  }
  const app = createConsoleApp(options);
  const server = await new Promise<ServerType>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, hostname: host, port: options.port ?? 4100 }, () => resolve(s));
    s.once('error', reject);
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : (options.port ?? 4100);
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shownHost}:${port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        if ('closeAllConnections' in server) server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export { ConsoleInputError };
