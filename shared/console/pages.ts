import { finishedLabel, humanSeconds } from '../jobs/describe.js';
import type { Job, JobExecution, JobStatus } from '../jobs/model.js';
import type { JobStats } from '../jobs/operator.js';
import { barChart } from './charts.js';
import { type Html, html } from './html.js';

/** The console's pages, rendered from the tracker's answers; every value is escaped by `html`. */

// Rendering.

const STATUSES_SHOWN: readonly JobStatus[] = [
  'pending',
  'running',
  'retrying',
  'completed',
  'failed',
  'cancelled',
];

export function renderOverview(stats: JobStats): Html {
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

/** Characters that change the direction of the text around them; shown as markers, never applied. */
const BIDI_CONTROLS = /[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g;

/**
 * Text from users (keys, errors, payloads), escaped, with each direction control shown as a visible
 * marker (`⟨U+202E⟩`) instead of reversing what follows it: an operator sees the text as stored. Set in
 * a `<bdi dir="auto">`, right-to-left text keeps its own direction without moving what is around it.
 */
export function userText(text: string): Html {
  return html`<bdi dir="auto">${visibleControls(text)}</bdi>`;
}

/** Text with its direction controls shown as markers, not isolated (a left-to-right block such as JSON). */
function visibleControls(text: string): Html {
  const parts: Html[] = [];
  let from = 0;
  for (const m of text.matchAll(BIDI_CONTROLS)) {
    const code = m[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0');
    parts.push(
      html`${text.slice(from, m.index)}<span class="ctl" title="a direction control character">⟨U+${code}⟩</span>`,
    );
    from = m.index + m[0].length;
  }
  parts.push(html`${text.slice(from)}`);
  return html`${parts}`;
}

/** Keys and errors in a list: at most this many characters, the whole text on the job's page. */
export const LIST_TEXT_CHARS = 60;

/**
 * User text in a list cell: cut to `LIST_TEXT_CHARS` (and clipped by CSS), and isolated with `<bdi>` so
 * right-to-left text or a direction override (U+202E) cannot reorder the rest of the row.
 */
function clipped(text: string | null, className: string): Html {
  if (text === null || text === '') return html`<td class="${className}"></td>`;
  const shown =
    [...text].length > LIST_TEXT_CHARS ? `${[...text].slice(0, LIST_TEXT_CHARS).join('')}…` : text;
  return html`<td class="${className} clip">${userText(shown)}</td>`;
}

/**
 * The jobs list's columns: a fixed layout that fits the window, so no key or error, however long, pushes
 * a column off the page; a cell too narrow for its text ends in an ellipsis (the job's page has it all).
 */
export const JOBS_COLUMNS = html`<colgroup><col style="width:22%"><col style="width:11%"><col style="width:7%"><col style="width:6%"><col style="width:15%"><col style="width:12%"><col style="width:12%"><col style="width:15%"></colgroup>`;

/** A time in a list: to the second, UTC (the job's page shows it in full). */
function listTime(d: Date): Html {
  return html`<td class="time" title="${d}">${d.toISOString().slice(0, 19).replace('T', ' ')}</td>`;
}

export function jobRow(j: Job): Html {
  return html`<tr data-id="${j.id}"><td class="id"><a href="/jobs/${j.id}">${j.id}</a></td><td>${j.jobType}</td><td class="status-${j.status}">${j.status}</td><td>${j.attempts}/${j.maxAttempts}</td>${clipped(j.idempotencyKey, 'key')}${listTime(j.createdAt)}${listTime(j.scheduledAt)}${clipped(j.lastError, 'error-text')}</tr>`;
}

export function renderJob(
  job: Job,
  executions: JobExecution[],
  csrfField: Html,
  done: string | undefined,
  /** The replay form and payload history (`replay.ts`), shown after the actions. */
  replay: Html | string = '',
): Html {
  const notice: Record<string, string> = {
    retry: 'Retried: the job is pending again.',
    replay:
      'Retried with the new payload: the job is pending again; its previous payload is in its history below.',
    cancel: 'Cancelled.',
    enqueued: 'Enqueued.',
    existing: 'A job with this key already exists; nothing was written. This is that job.',
    debounced:
      'Joined the pending job with this debounce key: it has the new payload and runs when the window ends. This is that job.',
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
    [finishedLabel(job.status), job.completedAt ?? '—'],
    ['created at', job.createdAt],
    ['updated at', job.updatedAt],
    ['last error', job.lastError ?? '—'],
  ];
  const canRetry = job.status === 'failed' || job.status === 'cancelled';
  const canCancel = job.status === 'pending' || job.status === 'retrying' || job.status === 'running';
  return html`${done && notice[done] ? html`<p class="notice" id="notice">${notice[done]}</p>` : ''}
<dl class="fields">${fields.map(([k, v]) => html`<dt>${k}</dt><dd data-field="${k}">${userText(v instanceof Date ? v.toISOString() : String(v))}</dd>`)}</dl>
<div class="actions">
${canRetry ? html`<form method="post" action="/jobs/${job.id}/retry">${csrfField}<button type="submit" id="retry">Retry</button></form>` : ''}
${canCancel ? html`<form method="post" action="/jobs/${job.id}/cancel">${csrfField}<button type="submit" id="cancel">Cancel</button></form>` : ''}
</div>
<h2>Payload</h2><pre class="payload" dir="ltr">${visibleControls(JSON.stringify(job.payload, null, 2))}</pre>
${replay}
<h2>Attempts</h2>
${
  executions.length === 0
    ? html`<p class="muted">no attempts yet</p>`
    : html`<ol class="timeline">${executions.map(
        (
          e,
        ) => html`<li class="outcome-${e.outcome ?? 'running'}"><strong>attempt ${e.attempt}: ${e.outcome ?? 'running'}</strong>
<div>claimed ${e.claimedAt}${e.startedAt ? html` · started ${e.startedAt}` : ''}${e.finishedAt ? html` · finished ${e.finishedAt}` : ''}${e.durationMs !== null && e.durationMs !== undefined ? html` · ${e.durationMs} ms` : ''}</div>
${e.error ? html`<div class="error-text">${userText(e.error)}</div>` : ''}</li>`,
      )}</ol>`
}`;
}

export const CSS = `
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
.status-failed{color:#b91c1c}.status-completed{color:#047857}
bdi{unicode-bidi:isolate}.ctl{color:#9333ea;font-size:11px}td.clip{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
table.jobs{table-layout:fixed;width:100%}table.jobs td{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
table.jobs td.id{font:12px ui-monospace,monospace}.hint{font-size:12px}`;
