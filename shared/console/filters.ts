import type { LendingTracker } from '../job-types/index.js';
import { parseIdempotencyKey, parseTimeText } from '../jobs/job-input.js';
import { JOB_STATUSES, type JobStatus } from '../jobs/model.js';
import type { JobQuery } from '../jobs/operator.js';
import { ConsoleInputError } from './errors.js';
import { type Html, html } from './html.js';

/** The jobs list's filter: read from a query string or a form, by the rules every door uses. */

export const FILTER_FIELDS = ['status', 'type', 'key', 'from', 'to'] as const;
export type FilterForm = Partial<Record<(typeof FILTER_FIELDS)[number], string>>;
export type BulkAction = 'retry' | 'cancel';

export function nonEmpty(v: string | undefined): string | undefined {
  const t = v?.trim();
  return t === undefined || t === '' ? undefined : t;
}

/**
 * A time field: ISO 8601, read by the same parser as every run time (a day or hour that does not exist is
 * refused, never rolled over); the console's fields are labelled UTC, so a time without a zone is UTC.
 */
export function parseConsoleTime(label: string, text: string): Date {
  return parseTimeText(label, text, { zonelessIsUtc: true });
}

export function parseFilter(get: (key: string) => string | undefined): { query: JobQuery; form: FilterForm } {
  const form: FilterForm = {};
  for (const k of FILTER_FIELDS) {
    // A key is matched as given (spaces included); the other fields are trimmed.
    const v = k === 'key' ? get(k) || undefined : nonEmpty(get(k));
    if (v !== undefined) form[k] = v;
  }
  if (form.status !== undefined && !JOB_STATUSES.includes(form.status as JobStatus)) {
    throw new ConsoleInputError(`unknown status "${form.status}" (one of ${JOB_STATUSES.join(', ')})`);
  }
  const query: JobQuery = {
    status: form.status as JobStatus | undefined,
    jobType: form.type,
    idempotencyKey: form.key !== undefined ? parseIdempotencyKey(form.key) : undefined,
    createdFrom: form.from !== undefined ? parseConsoleTime('from', form.from) : undefined,
    createdTo: form.to !== undefined ? parseConsoleTime('to', form.to) : undefined,
  };
  return { query, form };
}

export function filterQueryString(form: FilterForm): string {
  const params = new URLSearchParams();
  for (const k of FILTER_FIELDS) if (form[k] !== undefined) params.set(k, form[k]!);
  return params.toString();
}

export function describeFilter(form: FilterForm): string {
  const parts = FILTER_FIELDS.filter((k) => form[k] !== undefined).map((k) => `${k}=${form[k]}`);
  return parts.length === 0 ? 'all jobs' : parts.join(' ');
}

export function bulkAction(v: string | undefined): BulkAction {
  if (v === 'retry' || v === 'cancel') return v;
  throw new ConsoleInputError(`unknown bulk action "${v ?? ''}" (retry or cancel)`);
}

/** The statuses each bulk action can change. */
export const BULK_ELIGIBLE: Record<BulkAction, readonly JobStatus[]> = {
  retry: ['failed', 'cancelled'],
  cancel: ['pending', 'retrying', 'running'],
};

/** The bulk actions that can apply to a filter: none that could match no job by its status alone. */
export function bulkActionsFor(form: FilterForm): BulkAction[] {
  return (['retry', 'cancel'] as const).filter(
    (a) => form.status === undefined || BULK_ELIGIBLE[a].includes(form.status as JobStatus),
  );
}

export function filterForm(form: FilterForm, tracker: LendingTracker): Html {
  const types = tracker.registry.list().map((t) => t.type);
  return html`<form method="get" action="/jobs" class="filters">
<label>status <select name="status"><option value="">any</option>${JOB_STATUSES.map((s) => html`<option${form.status === s ? html` selected` : ''}>${s}</option>`)}</select></label>
<label>type <select name="type"><option value="">any</option>${types.map((t) => html`<option${form.type === t ? html` selected` : ''}>${t}</option>`)}</select></label>
<label>key <input name="key" value="${form.key ?? ''}" dir="auto"></label>
<label>id <input name="id" size="36"></label>
<label>created from <input name="from" value="${form.from ?? ''}" placeholder="2026-12-01T00:00 (UTC)"></label>
<label>to <input name="to" value="${form.to ?? ''}" placeholder="UTC"></label>
<button type="submit" id="filter">Filter</button></form>`;
}
