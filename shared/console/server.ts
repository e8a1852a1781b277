import { randomBytes, timingSafeEqual } from 'node:crypto';
import { type ServerType, serve } from '@hono/node-server';
import { type Context, Hono } from 'hono';
import { getCookie, setCookie } from 'hono/cookie';
import { z } from 'zod';
import { humanSeconds } from '../cli/format.js';
import type { SeedTracker } from '../job-types/index.js';
import { errorMessage, JobInputError } from '../jobs/errors.js';
import { JOB_STATUSES, type Job, type JobExecution, type JobStatus } from '../jobs/model.js';
import type { JobQuery, JobStats } from '../jobs/operator.js';
import { assertUuid } from '../jobs/tracker.js';
import { latestTick, nextTick, toEventBridgeExpression } from '../schedules/cron.js';
import { jobForTick, type RecurringSchedule } from '../schedules/definitions.js';
import { barChart } from './charts.js';
import { Html, html } from './html.js';
import { mountPauseRoutes } from './pauses.js';

/**
 * The operator console: server-rendered pages over the job tracker, the same functions the CLI calls, so
 * the same rules and errors apply. It holds no SQL. Every state change is a POST carrying the console's
 * CSRF token; with a token configured, every request must present it.
 */
export interface ConsoleOptions {
  tracker: SeedTracker;
  schedules: readonly RecurringSchedule[];
  /** Required for every request when set (bearer header, cookie, or `?token=` once). */
  token?: string;
  /** How often the overview refreshes itself. */
  refreshMs?: number;
  /** Where the console reads from, shown in the header. */
  description?: string;
}

type Vars = { Variables: { nonce: string } };

/** Bad console input: shown as a message with status 400, nothing written. */
class ConsoleInputError extends Error {}

const TOKEN_COOKIE = 'lana_console_token';

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function createConsoleApp(options: ConsoleOptions): Hono<Vars> {
  const { tracker } = options;
  const csrf = randomBytes(24).toString('base64url');
  const refreshMs = options.refreshMs ?? 5000;
  const app = new Hono<Vars>();

  app.use('*', async (c, next) => {
    if (options.token !== undefined) {
      const token = options.token;
      const bearer = c.req.header('authorization')?.replace(/^Bearer\s+/i, '');
      const query = c.req.query('token');
      if (query !== undefined && sameSecret(query, token)) {
        setCookie(c, TOKEN_COOKIE, token, { httpOnly: true, sameSite: 'Strict', path: '/' });
        const url = new URL(c.req.url);
        url.searchParams.delete('token');
        return c.redirect(`${url.pathname}${url.search}`, 303);
      }
      const presented = bearer ?? getCookie(c, TOKEN_COOKIE);
      if (presented === undefined || !sameSecret(presented, token)) {
        return c.text('401: this console requires its token (Authorization: Bearer, or ?token=)', 401);
      }
    }
    const nonce = randomBytes(16).toString('base64');
    c.set('nonce', nonce);
    await next();
    c.header(
      'Content-Security-Policy',
      `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'unsafe-inline'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'`,
    );
    c.header('X-Content-Type-Options', 'nosniff');
    c.header('Referrer-Policy', 'no-referrer');
  });

  // Cross-site request protection: a POST must carry the form's token and come from this origin.
  app.use('*', async (c, next) => {
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD') {
      const origin = c.req.header('origin');
      const host = c.req.header('host');
      const fetchSite = c.req.header('sec-fetch-site');
      const form = await c.req.parseBody();
      const presented = typeof form._csrf === 'string' ? form._csrf : '';
      const crossOrigin =
        (origin !== undefined && origin !== 'null' && new URL(origin).host !== host) ||
        fetchSite === 'cross-site';
      if (crossOrigin || !sameSecret(presented, csrf)) {
        return c.html(
          page(
            c,
            'Refused',
            html`<p class="error">Refused: this request did not come from a console page (missing or wrong CSRF token). Nothing was changed.</p>`,
          ),
          403,
        );
      }
    }
    await next();
  });

  app.onError((err, c) => {
    const bad = err instanceof JobInputError || err instanceof ConsoleInputError;
    const notFound = err instanceof JobInputError && err.code === 'job_not_found';
    return c.html(
      page(
        c,
        bad ? 'Bad input' : 'Error',
        html`<p class="error">${bad ? '' : 'Error: '}${errorMessage(err)}</p><p>Nothing was changed.</p>`,
      ),
      notFound ? 404 : bad ? 400 : 500,
    );
  });

  const shell = (title: string, body: Html, nonce: string, extraScript?: Html) => html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title} · lana-jobs console</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>${new Html(CSS)}</style></head>
<body><header><strong>lana-jobs</strong>
<nav><a href="/">Overview</a><a href="/jobs">Jobs</a><a href="/failures">Failures</a><a href="/schedules">Schedules</a><a href="/types">Types</a><a href="/enqueue">Enqueue</a></nav>
<span class="muted">${options.description ?? ''}</span></header>
<main><h1>${title}</h1>${body}</main>${extraScript ? html`<script nonce="${nonce}">${extraScript}</script>` : ''}</body></html>`;
  const page = (c: Context<Vars>, title: string, body: Html, script?: Html) =>
    shell(title, body, c.get('nonce'), script).text;
  const csrfField = html`<input type="hidden" name="_csrf" value="${csrf}">`;

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
    const { query, form } = parseFilter((k) => c.req.query(k));
    const before = nonEmpty(c.req.query('before'));
    const result = await tracker.listJobsPage(query, { before, limit: 50 });
    const qs = filterQueryString(form);
    return c.html(
      page(
        c,
        'Jobs',
        html`${filterForm(form, tracker)}
<table class="jobs"><thead><tr><th>id</th><th>type</th><th>status</th><th>attempts</th><th>key</th><th>created</th><th>scheduled</th><th>last error</th></tr></thead><tbody>
${result.jobs.length === 0 ? html`<tr><td colspan="8" class="muted">no jobs match</td></tr>` : result.jobs.map(jobRow)}
</tbody></table>
<p class="pager">${before ? html`<a href="/jobs?${qs}">newest</a> ` : ''}${result.nextBefore ? html`<a href="/jobs?${qs}${qs ? '&' : ''}before=${encodeURIComponent(result.nextBefore)}" id="older">older →</a>` : ''}</p>
<p class="bulk"><a class="button" href="/jobs/bulk?action=retry${qs ? '&' : ''}${qs}">Retry all matching…</a> <a class="button" href="/jobs/bulk?action=cancel${qs ? '&' : ''}${qs}">Cancel all matching…</a></p>`,
      ),
    );
  });

  app.get('/jobs/bulk', async (c) => {
    const action = bulkAction(c.req.query('action'));
    const { query, form } = parseFilter((k) => c.req.query(k));
    const count = await tracker.countForBulk(query, action);
    const verb = action === 'retry' ? 'Retry' : 'Cancel';
    const eligible = action === 'retry' ? 'failed or cancelled' : 'pending, retrying or running';
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
    const executions = await tracker.getExecutions(id);
    const done = c.req.query('done');
    return c.html(page(c, `Job ${job.id}`, renderJob(job, executions, csrfField, done)));
  });

  for (const action of ['retry', 'cancel'] as const) {
    app.post(`/jobs/:id/${action}`, async (c) => {
      const id = c.req.param('id');
      if (action === 'retry') await tracker.retry(id);
      else await tracker.cancel(id);
      return c.redirect(`/jobs/${encodeURIComponent(id)}?done=${action}`, 303);
    });
  }

  mountPauseRoutes(app, { tracker, csrfField, page });

  // Enqueue.
  app.get('/enqueue', (c) => {
    const type = nonEmpty(c.req.query('type'));
    return c.html(page(c, 'Enqueue a job', enqueueForm(tracker, type, csrfField, {}, null)));
  });
  app.post('/enqueue', async (c) => {
    const body = await c.req.parseBody();
    const fields: Record<string, string> = {};
    for (const [k, v] of Object.entries(body)) if (typeof v === 'string') fields[k] = v;
    const type = nonEmpty(fields.type);
    try {
      if (!type) throw new ConsoleInputError('choose a job type');
      const input = enqueueInputFromForm(tracker, type, fields);
      const [result] = await tracker.enqueueUntyped([input]);
      return c.redirect(`/jobs/${result!.job.id}?done=${result!.created ? 'enqueued' : 'existing'}`, 303);
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
${groups.length === 0 ? html`<tr><td colspan="5" class="muted">no failed or retrying jobs</td></tr>` : groups.map((g) => html`<tr><td class="error-text">${g.error ?? '(no message)'}</td><td>${g.count}</td><td>${g.failed}</td><td>${g.retrying}</td><td>${g.newest ? html`<a href="/jobs/${g.newest.id}">${g.newest.jobType} ${g.newest.id}</a>` : ''}</td></tr>`)}
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

// Rendering.

const STATUSES_SHOWN: readonly JobStatus[] = [
  'pending',
  'running',
  'retrying',
  'completed',
  'failed',
  'cancelled',
];

function renderOverview(stats: JobStats): Html {
  const types = [...new Set(stats.counts.map((c) => c.jobType))].sort();
  const countOf = (t: string, s: string) =>
    stats.counts.find((c) => c.jobType === t && c.status === s)?.count ?? 0;
  return html`<section class="cards">
<div class="card"><span class="label">queue depth (due now)</span><span class="value" id="queue-depth">${stats.queue.depth}</span></div>
<div class="card"><span class="label">oldest ready job waiting</span><span class="value">${humanSeconds(stats.queue.oldestReadyAgeSeconds)}</span></div>
<div class="card"><span class="label">running past their lease</span><span class="value">${stats.overdueRunning}</span></div>
</section>
<h2>Jobs by type and status</h2>
<table id="counts"><thead><tr><th>type</th>${STATUSES_SHOWN.map((s) => html`<th>${s}</th>`)}</tr></thead><tbody>
${types.length === 0 ? html`<tr><td colspan="7" class="muted">no jobs</td></tr>` : types.map((t) => html`<tr data-type="${t}"><td>${t}</td>${STATUSES_SHOWN.map((s) => html`<td data-status="${s}">${countOf(t, s) > 0 ? html`<a href="/jobs?type=${encodeURIComponent(t)}&status=${s}">${countOf(t, s)}</a>` : '0'}</td>`)}</tr>`)}
</tbody></table>
<p class="muted">Completed, failed and cancelled: jobs finished in the last ${humanSeconds(stats.finishedWindowSeconds)}.</p>
<h2>Last hour, by type</h2>
<div class="charts">
${barChart(
  'throughput (attempts finished)',
  stats.lastHour.map((h) => ({
    label: h.jobType,
    value: h.completed + h.failed,
    text: String(h.completed + h.failed),
  })),
  '#3b82f6',
)}
${barChart(
  'failure rate',
  stats.lastHour.map((h) => ({
    label: h.jobType,
    value: h.failureRate,
    text: `${(h.failureRate * 100).toFixed(1)}%`,
  })),
  '#ef4444',
)}
${barChart(
  'average execution time',
  stats.lastHour.map((h) => ({ label: h.jobType, value: h.avgDurationMs, text: `${h.avgDurationMs} ms` })),
  '#10b981',
)}
</div>`;
}

function jobRow(j: Job): Html {
  return html`<tr data-id="${j.id}"><td><a href="/jobs/${j.id}">${j.id}</a></td><td>${j.jobType}</td><td class="status-${j.status}">${j.status}</td><td>${j.attempts}/${j.maxAttempts}</td><td>${j.idempotencyKey ?? ''}</td><td>${j.createdAt}</td><td>${j.scheduledAt}</td><td class="error-text">${j.lastError ?? ''}</td></tr>`;
}

function renderJob(job: Job, executions: JobExecution[], csrfField: Html, done: string | undefined): Html {
  const notice: Record<string, string> = {
    retry: 'Retried: the job is pending again.',
    cancel: 'Cancelled.',
    enqueued: 'Enqueued.',
    existing: 'A job with this key already exists; nothing was written. This is that job.',
  };
  const fields: [string, unknown][] = [
    ['id', job.id],
    ['type', job.jobType],
    ['status', job.status],
    ['attempts', `${job.attempts} of ${job.maxAttempts}`],
    ['priority', job.priority],
    ['idempotency key', job.idempotencyKey ?? '—'],
    ['scheduled at', job.scheduledAt],
    ['started at', job.startedAt ?? '—'],
    ['completed at', job.completedAt ?? '—'],
    ['created at', job.createdAt],
    ['updated at', job.updatedAt],
    ['last error', job.lastError ?? '—'],
  ];
  const canRetry = job.status === 'failed' || job.status === 'cancelled';
  const canCancel = job.status === 'pending' || job.status === 'retrying' || job.status === 'running';
  return html`${done && notice[done] ? html`<p class="notice" id="notice">${notice[done]}</p>` : ''}
<dl class="fields">${fields.map(([k, v]) => html`<dt>${k}</dt><dd data-field="${k}">${v instanceof Date ? v : String(v)}</dd>`)}</dl>
<div class="actions">
${canRetry ? html`<form method="post" action="/jobs/${job.id}/retry">${csrfField}<button type="submit" id="retry">Retry</button></form>` : ''}
${canCancel ? html`<form method="post" action="/jobs/${job.id}/cancel">${csrfField}<button type="submit" id="cancel">Cancel</button></form>` : ''}
</div>
<h2>Payload</h2><pre class="payload">${JSON.stringify(job.payload, null, 2)}</pre>
<h2>Attempts</h2>
${
  executions.length === 0
    ? html`<p class="muted">no attempts yet</p>`
    : html`<ol class="timeline">${executions.map(
        (
          e,
        ) => html`<li class="outcome-${e.outcome ?? 'running'}"><strong>attempt ${e.attempt}: ${e.outcome ?? 'running'}</strong>
<div>claimed ${e.claimedAt}${e.startedAt ? html` · started ${e.startedAt}` : ''}${e.finishedAt ? html` · finished ${e.finishedAt}` : ''}${e.durationMs !== null && e.durationMs !== undefined ? html` · ${e.durationMs} ms` : ''}</div>
${e.error ? html`<div class="error-text">${e.error}</div>` : ''}</li>`,
      )}</ol>`
}`;
}

// Filters.

const FILTER_FIELDS = ['status', 'type', 'key', 'from', 'to'] as const;
type FilterForm = Partial<Record<(typeof FILTER_FIELDS)[number], string>>;

function nonEmpty(v: string | undefined): string | undefined {
  const t = v?.trim();
  return t === undefined || t === '' ? undefined : t;
}

/** `2026-12-01T10:00` (a datetime-local field, read as UTC) or an ISO time with a zone. */
function parseTime(label: string, text: string): Date {
  const withZone = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(text) ? `${text}Z` : text;
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/.test(withZone)) {
    throw new ConsoleInputError(`${label} "${text}" is not a time (use e.g. 2026-12-01T00:00, read as UTC)`);
  }
  const d = new Date(withZone);
  if (Number.isNaN(d.getTime())) throw new ConsoleInputError(`${label} "${text}" is not a valid time`);
  return d;
}

function parseFilter(get: (key: string) => string | undefined): { query: JobQuery; form: FilterForm } {
  const form: FilterForm = {};
  for (const k of FILTER_FIELDS) {
    const v = nonEmpty(get(k));
    if (v !== undefined) form[k] = v;
  }
  if (form.status !== undefined && !JOB_STATUSES.includes(form.status as JobStatus)) {
    throw new ConsoleInputError(`unknown status "${form.status}" (one of ${JOB_STATUSES.join(', ')})`);
  }
  const query: JobQuery = {
    status: form.status as JobStatus | undefined,
    jobType: form.type,
    idempotencyKey: form.key,
    createdFrom: form.from !== undefined ? parseTime('from', form.from) : undefined,
    createdTo: form.to !== undefined ? parseTime('to', form.to) : undefined,
  };
  return { query, form };
}

function filterQueryString(form: FilterForm): string {
  const params = new URLSearchParams();
  for (const k of FILTER_FIELDS) if (form[k] !== undefined) params.set(k, form[k]!);
  return params.toString();
}

function describeFilter(form: FilterForm): string {
  const parts = FILTER_FIELDS.filter((k) => form[k] !== undefined).map((k) => `${k}=${form[k]}`);
  return parts.length === 0 ? 'all jobs' : parts.join(' ');
}

function bulkAction(v: string | undefined): 'retry' | 'cancel' {
  if (v === 'retry' || v === 'cancel') return v;
  throw new ConsoleInputError(`unknown bulk action "${v ?? ''}" (retry or cancel)`);
}

function filterForm(form: FilterForm, tracker: SeedTracker): Html {
  const types = tracker.registry.list().map((t) => t.type);
  return html`<form method="get" action="/jobs" class="filters">
<label>status <select name="status"><option value="">any</option>${JOB_STATUSES.map((s) => html`<option${form.status === s ? html` selected` : ''}>${s}</option>`)}</select></label>
<label>type <select name="type"><option value="">any</option>${types.map((t) => html`<option${form.type === t ? html` selected` : ''}>${t}</option>`)}</select></label>
<label>key <input name="key" value="${form.key ?? ''}"></label>
<label>id <input name="id" size="36"></label>
<label>created from <input name="from" value="${form.from ?? ''}" placeholder="2026-12-01T00:00"></label>
<label>to <input name="to" value="${form.to ?? ''}" placeholder="UTC"></label>
<button type="submit" id="filter">Filter</button></form>`;
}

// Enqueue: a form from the type's payload schema.

interface PayloadField {
  name: string;
  kind: 'string' | 'number' | 'integer' | 'boolean' | 'enum' | 'json';
  required: boolean;
  options?: string[];
  description?: string;
}

/** The payload's top-level fields from its JSON Schema, or null when it is not a plain object. */
function payloadFields(schema: z.ZodType): PayloadField[] | null {
  let js: Record<string, unknown>;
  try {
    js = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  } catch {
    return null;
  }
  if (js.type !== 'object' || typeof js.properties !== 'object' || js.properties === null) return null;
  const required = new Set(Array.isArray(js.required) ? (js.required as string[]) : []);
  return Object.entries(js.properties as Record<string, Record<string, unknown>>).map(([name, p]) => {
    const values = Array.isArray(p.enum) ? p.enum : p.const !== undefined ? [p.const] : null;
    const kind: PayloadField['kind'] = values
      ? 'enum'
      : p.type === 'string' || p.type === 'number' || p.type === 'integer' || p.type === 'boolean'
        ? p.type
        : 'json';
    return {
      name,
      kind,
      required: required.has(name),
      options: values?.map(String),
      description: [p.format, p.pattern, p.description].filter(Boolean).join(' · ') || undefined,
    };
  });
}

function enqueueForm(
  tracker: SeedTracker,
  type: string | undefined,
  csrfField: Html,
  values: Record<string, string>,
  error: string | null,
): Html {
  const types = tracker.registry.list();
  const chosen = type ? types.find((t) => t.type === type) : undefined;
  const err = error ? html`<p class="error" id="error">${error}</p><p>Nothing was written.</p>` : '';
  const picker = html`<form method="get" action="/enqueue"><label>type <select name="type">${types.map((t) => html`<option${t.type === type ? html` selected` : ''}>${t.type}</option>`)}</select></label> <button type="submit">Choose</button></form>`;
  if (!chosen)
    return html`${err}${type ? html`<p class="error">unknown job type "${type}"</p>` : ''}${picker}`;
  const fields = payloadFields(chosen.schema as z.ZodType);
  const input = (f: PayloadField) => {
    const name = `payload.${f.name}`;
    const v = values[name] ?? '';
    if (f.kind === 'enum') {
      return html`<select name="${name}">${f.required ? '' : html`<option value="">(none)</option>`}${(f.options ?? []).map((o) => html`<option${o === v ? html` selected` : ''}>${o}</option>`)}</select>`;
    }
    if (f.kind === 'boolean') {
      return html`<select name="${name}"><option value="">(none)</option><option${v === 'true' ? html` selected` : ''}>true</option><option${v === 'false' ? html` selected` : ''}>false</option></select>`;
    }
    if (f.kind === 'json') return html`<textarea name="${name}" rows="3" placeholder="JSON">${v}</textarea>`;
    return html`<input name="${name}" value="${v}"${f.kind !== 'string' ? html` inputmode="decimal"` : ''}>`;
  };
  return html`${err}${picker}<p>${chosen.description}</p>
<form method="post" action="/enqueue" id="enqueue-form">${csrfField}<input type="hidden" name="type" value="${chosen.type}">
<fieldset><legend>payload of ${chosen.type}</legend>
${
  fields
    ? fields.map(
        (f) =>
          html`<label>${f.name}${f.required ? ' *' : ''} <span class="muted">${f.kind}${f.description ? ` · ${f.description}` : ''}</span> ${input(f)}</label>`,
      )
    : html`<label>payload (JSON) <textarea name="payload" rows="6">${values.payload ?? '{}'}</textarea></label>`
}
</fieldset>
<label>idempotency key <input name="key" value="${values.key ?? ''}"></label>
<label>run at <input name="at" value="${values.at ?? ''}" placeholder="now; or 2026-12-01T00:00 (UTC)"></label>
<label>priority <input name="priority" value="${values.priority ?? ''}" placeholder="the type's"></label>
<button type="submit" id="enqueue">Enqueue</button></form>`;
}

function enqueueInputFromForm(tracker: SeedTracker, type: string, fields: Record<string, string>) {
  const jobType = tracker.registry.require(type);
  const shape = payloadFields(jobType.schema as z.ZodType);
  let payload: unknown;
  if (shape) {
    const out: Record<string, unknown> = {};
    for (const f of shape) {
      const raw = fields[`payload.${f.name}`];
      if (raw === undefined || raw.trim() === '') continue;
      if (f.kind === 'number' || f.kind === 'integer') {
        const n = Number(raw.trim());
        out[f.name] = Number.isFinite(n) ? n : raw;
      } else if (f.kind === 'boolean') out[f.name] = raw === 'true';
      else if (f.kind === 'json') out[f.name] = parseJson(`payload.${f.name}`, raw);
      else out[f.name] = raw;
    }
    payload = out;
  } else payload = parseJson('payload', fields.payload ?? '{}');
  const priorityText = nonEmpty(fields.priority);
  let priority: number | undefined;
  if (priorityText !== undefined) {
    if (!/^-?\d+$/.test(priorityText))
      throw new ConsoleInputError(`priority must be an integer (got "${priorityText}")`);
    priority = Number(priorityText);
    if (priority < -1000 || priority > 1000)
      throw new ConsoleInputError(`priority must be from -1000 to 1000 (got ${priority})`);
  }
  const at = nonEmpty(fields.at);
  return {
    type,
    payload,
    runAt: at !== undefined ? parseTime('run at', at) : undefined,
    idempotencyKey: nonEmpty(fields.key),
    priority,
  };
}

function parseJson(label: string, raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch (err) {
    throw new JobInputError('invalid_payload', `${label} is not valid JSON: ${(err as Error).message}`);
  }
}

const CSS = `
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1f2937;background:#f8fafc}
header{display:flex;gap:24px;align-items:center;padding:10px 20px;background:#111827;color:#f9fafb}
header nav a{color:#e5e7eb;margin-right:14px;text-decoration:none}header .muted{color:#9ca3af}
main{padding:12px 20px}h1{font-size:20px}h2{font-size:16px;margin-top:22px}
table{border-collapse:collapse;background:#fff}th,td{border:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f1f5f9}.muted{color:#6b7280}.error{color:#b91c1c;font-weight:600}.error-text{color:#b91c1c;white-space:pre-wrap;max-width:480px;overflow-wrap:anywhere}
.notice{background:#ecfdf5;border:1px solid #10b981;padding:6px 10px;display:inline-block}
.cards{display:flex;gap:12px}.card{background:#fff;border:1px solid #e5e7eb;padding:10px 16px;min-width:170px}
.card .label{display:block;color:#6b7280;font-size:12px}.card .value{font-size:24px;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{background:#fff;border:1px solid #e5e7eb;margin:0;padding:8px}
.chart text{font-size:12px;fill:#374151}.chart .chart-title{font-weight:600}
.fields{display:grid;grid-template-columns:140px 1fr;gap:2px 12px;background:#fff;padding:10px;border:1px solid #e5e7eb;max-width:860px}
.fields dt{color:#6b7280}.fields dd{margin:0;overflow-wrap:anywhere}
pre.payload{background:#0f172a;color:#e2e8f0;padding:10px;max-width:860px;overflow:auto}
.timeline{list-style:none;padding-left:0;border-left:3px solid #cbd5e1;margin-left:8px}.timeline li{padding:4px 12px;margin-bottom:6px}
.timeline .outcome-completed strong{color:#047857}.timeline .outcome-failed strong,.timeline .outcome-lease_expired strong{color:#b91c1c}
.actions{display:flex;gap:8px;margin-top:10px}form.filters{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:10px}
#enqueue-form label{display:block;margin:6px 0}.button{border:1px solid #9ca3af;padding:3px 8px;background:#fff;text-decoration:none;color:#111827}
.status-failed{color:#b91c1c}.status-completed{color:#047857}`;

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
