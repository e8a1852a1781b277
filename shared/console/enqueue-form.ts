import { z } from 'zod';
import type { LendingTracker } from '../job-types/index.js';
import { JobInputError } from '../jobs/errors.js';
import {
  DEBOUNCE_WINDOW_SECONDS_RANGE,
  MAX_ATTEMPTS_RANGE,
  PRIORITY_RANGE,
  parsePayloadText,
} from '../jobs/job-input.js';
import type { UntypedNewJob } from '../jobs/tracker.js';
import { ConsoleInputError } from './errors.js';
import { parseConsoleTime } from './filters.js';
import { type Html, html } from './html.js';

/** The enqueue form, built from each type's payload schema, and the job it posts. */

interface PayloadField {
  name: string;
  kind: 'string' | 'number' | 'integer' | 'boolean' | 'enum' | 'json';
  required: boolean;
  options?: string[];
  /** What to give, in words: the schema's description, else its format named plainly. */
  hint?: string;
}

const FORMAT_HINTS: Record<string, string> = {
  uuid: 'a UUID, e.g. 0193a1b2-0000-7000-8000-000000000001',
  date: 'a date, YYYY-MM-DD',
  'date-time': 'an ISO 8601 time, e.g. 2026-12-01T00:00:00Z',
  email: 'an e-mail address',
  uri: 'a URL',
};

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
    const hint =
      typeof p.description === 'string'
        ? p.description
        : typeof p.format === 'string'
          ? FORMAT_HINTS[p.format]
          : undefined;
    return { name, kind, required: required.has(name), options: values?.map(String), hint };
  });
}

export function enqueueForm(
  tracker: LendingTracker,
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
    return html`<input name="${name}" value="${v}" dir="auto"${f.kind !== 'string' ? html` inputmode="decimal"` : ''}>`;
  };
  const kindWords: Record<PayloadField['kind'], string> = {
    string: 'text',
    number: 'a number',
    integer: 'a whole number',
    boolean: 'true or false',
    enum: 'one of the list',
    json: 'JSON',
  };
  return html`${err}${picker}<p>${chosen.description}</p>
<form method="post" action="/enqueue" id="enqueue-form">${csrfField}<input type="hidden" name="type" value="${chosen.type}">
<fieldset><legend>payload of ${chosen.type}</legend>
${
  fields
    ? fields.map(
        (f) =>
          html`<label>${f.name}${f.required ? ' *' : ''} <span class="muted hint" data-hint="${f.name}">${f.hint ?? kindWords[f.kind]}${f.required ? '' : '; optional'}</span> ${input(f)}</label>`,
      )
    : html`<label>payload (JSON) <textarea name="payload" rows="6">${values.payload ?? '{}'}</textarea></label>`
}
</fieldset>
<label>idempotency key <span class="muted">optional; a second enqueue with the same type and key writes nothing</span> <input name="key" value="${values.key ?? ''}" dir="auto"></label>
<label>run at <span class="muted">empty: now; or a UTC time, e.g. 2026-12-01T00:00</span> <input name="at" value="${values.at ?? ''}" placeholder="now"></label>
<label>priority <span class="muted">${PRIORITY_RANGE.min} to ${PRIORITY_RANGE.max}; lower runs first; empty: the type's (${chosen.priority})</span> <input name="priority" value="${values.priority ?? ''}" placeholder="${chosen.priority}"></label>
<label>max attempts <span class="muted">${MAX_ATTEMPTS_RANGE.min} to ${MAX_ATTEMPTS_RANGE.max}; empty: the type's (${chosen.retry.maxAttempts})</span> <input name="maxAttempts" value="${values.maxAttempts ?? ''}" placeholder="${chosen.retry.maxAttempts}"></label>
<label>debounce key <span class="muted">optional; while this type's job with the key has not started, an enqueue replaces its payload and moves its run to the end of the window</span> <input name="debounceKey" value="${values.debounceKey ?? ''}" dir="auto"></label>
<label>debounce window <span class="muted">seconds, ${DEBOUNCE_WINDOW_SECONDS_RANGE.min} to ${DEBOUNCE_WINDOW_SECONDS_RANGE.max}; with a debounce key</span> <input name="debounceWindow" value="${values.debounceWindow ?? ''}" inputmode="decimal"></label>
<label>debounce maximum wait <span class="muted">seconds; optional: the latest it runs after the burst's first enqueue</span> <input name="debounceMaxWait" value="${values.debounceMaxWait ?? ''}" inputmode="decimal"></label>
<button type="submit" id="enqueue">Enqueue</button></form>`;
}

/**
 * The job a posted form asks for. The payload comes from its fields (or whole, as JSON, in `payload`);
 * the options go to the tracker as typed, which reads them by the same rules and with the same messages
 * as the CLI and application code. Only the run time is read here, because the form's time is UTC
 * without saying so.
 */
export function enqueueInputFromForm(
  tracker: LendingTracker,
  type: string,
  fields: Record<string, string>,
): UntypedNewJob {
  const jobType = tracker.registry.require(type);
  const shape = payloadFields(jobType.schema as z.ZodType);
  let payload: unknown;
  if (fields.payload !== undefined && fields.payload.trim() !== '')
    payload = parsePayloadText(fields.payload);
  else if (shape) {
    const out: Record<string, unknown> = {};
    for (const f of shape) {
      const raw = fields[`payload.${f.name}`];
      if (raw === undefined || raw.trim() === '') continue;
      if (f.kind === 'number' || f.kind === 'integer') {
        const n = Number(raw.trim());
        out[f.name] = Number.isFinite(n) ? n : raw;
      } else if (f.kind === 'boolean') out[f.name] = raw === 'true';
      else if (f.kind === 'json') out[f.name] = parseJsonField(`payload.${f.name}`, raw);
      else out[f.name] = raw;
    }
    payload = out;
  } else payload = {};
  const given = (name: string) =>
    fields[name] === undefined || fields[name].trim() === '' ? undefined : fields[name];
  const at = given('at');
  const debounceKey =
    fields.debounceKey === undefined || fields.debounceKey === '' ? undefined : fields.debounceKey;
  if (debounceKey === undefined && (given('debounceWindow') ?? given('debounceMaxWait')) !== undefined)
    throw new ConsoleInputError('a debounce window or maximum wait needs a debounce key');
  return {
    type,
    payload,
    runAt: at !== undefined ? parseConsoleTime('run at', at) : undefined,
    idempotencyKey: fields.key === undefined || fields.key === '' ? undefined : fields.key,
    priority: given('priority'),
    maxAttempts: given('maxAttempts'),
    // As text: the tracker reads the numbers by the same rules, and with the same messages, as the CLI's.
    debounce:
      debounceKey === undefined
        ? undefined
        : {
            key: debounceKey,
            windowSeconds: given('debounceWindow') ?? '',
            maxWaitSeconds: given('debounceMaxWait'),
          },
  };
}

function parseJsonField(label: string, raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch (err) {
    throw new JobInputError('invalid_payload', `${label} is not valid JSON: ${(err as Error).message}`);
  }
}
