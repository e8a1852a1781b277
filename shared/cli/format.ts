import * as z from 'zod';
import { finishedLabel, humanSeconds, limitsText } from '../jobs/describe.js';
import type { Job, JobExecution } from '../jobs/model.js';
import type { JobTypePause } from '../jobs/pauses.js';
import type { RegisteredJobType } from '../jobs/registry.js';
import { retrySchedule } from '../jobs/retry-policy.js';
import type { JobStats } from '../jobs/tracker.js';

/** Renders rows as an aligned text table. */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => (c ?? '').padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function iso(d: Date | null | undefined): string {
  return d ? d.toISOString() : '-';
}

/** JSON for `--json`: dates as ISO strings, bigints as strings. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2);
}

interface JsonSchemaNode {
  type?: string | string[];
  format?: string;
  pattern?: string;
  const?: unknown;
  enum?: unknown[];
  items?: JsonSchemaNode;
  properties?: Record<string, JsonSchemaNode>;
  required?: string[];
  anyOf?: JsonSchemaNode[];
  oneOf?: JsonSchemaNode[];
}

/**
 * A type's payload fields, read from its zod schema: `processId: uuid`, `date?: string (YYYY-MM-DD)`.
 * A union (notification) gives one line per variant.
 */
export function payloadFields(schema: z.ZodType): string[] {
  const root = z.toJSONSchema(schema, { unrepresentable: 'any' }) as JsonSchemaNode;
  const variants = root.anyOf ?? root.oneOf ?? [root];
  return variants.map((v) => {
    const props = Object.entries(v.properties ?? {});
    if (props.length === 0) return '{}';
    const required = new Set(v.required ?? []);
    return props.map(([k, p]) => `${k}${required.has(k) ? '' : '?'}: ${describeField(p)}`).join(', ');
  });
}

function describeField(node: JsonSchemaNode): string {
  if (node.const !== undefined) return JSON.stringify(node.const);
  if (node.enum) return node.enum.map((e) => JSON.stringify(e)).join(' | ');
  if (node.format) return node.format;
  if (node.pattern === '^\\d{4}-\\d{2}-\\d{2}$') return 'YYYY-MM-DD';
  if (node.type === 'array' && node.items) return `${describeField(node.items)}[]`;
  const variants = node.anyOf ?? node.oneOf;
  if (variants) return variants.map(describeField).join(' | ');
  return Array.isArray(node.type) ? node.type.join(' | ') : (node.type ?? 'any');
}

type ListedType = Pick<
  RegisteredJobType,
  | 'type'
  | 'description'
  | 'retry'
  | 'timeoutSeconds'
  | 'leaseSeconds'
  | 'concurrency'
  | 'rateLimit'
  | 'concurrencyKey'
>;

export function formatTypes(
  types: (ListedType & Pick<RegisteredJobType, 'schema'>)[],
  paused: ReadonlyMap<string, Pick<JobTypePause, 'pausedBy' | 'pausedAt' | 'reason'>> | null = null,
): string {
  const payloads = types
    .map((t) => {
      const fields = payloadFields(t.schema);
      return `${t.type}\n${fields.map((f) => `  ${f}`).join('\n')}`;
    })
    .join('\n');
  const pauses =
    paused === null ? '' : `\n\n${formatPauses([...paused].map(([jobType, p]) => ({ jobType, ...p })))}`;
  return `${typeTable(types)}${pauses}\n\nPayload fields (? = optional):\n${payloads}`;
}

function typeTable(types: ListedType[]): string {
  return table(
    ['TYPE', 'MAX ATTEMPTS', 'RETRY DELAYS', 'TIMEOUT', 'LEASE', 'LIMITS', 'DESCRIPTION'],
    types.map((t) => [
      t.type,
      t.retry.maxAttempts,
      retrySchedule(t.retry).map(humanSeconds).join(', ') || '-',
      humanSeconds(t.timeoutSeconds),
      humanSeconds(t.leaseSeconds),
      limitsText(t),
      t.description,
    ]),
  );
}

export function formatJobList(jobs: Job[]): string {
  if (jobs.length === 0) return 'no jobs';
  return table(
    ['ID', 'TYPE', 'STATUS', 'ATTEMPTS', 'PRIORITY', 'SCHEDULED AT', 'LAST ERROR'],
    jobs.map((j) => [
      j.id,
      j.jobType,
      j.status,
      `${j.attempts}/${j.maxAttempts}`,
      j.priority,
      iso(j.scheduledAt),
      truncateLine(j.lastError ?? '', 60),
    ]),
  );
}

export function formatJob(job: Job, executions: JobExecution[]): string {
  const lines = [
    `id             ${job.id}`,
    `type           ${job.jobType}`,
    `status         ${job.status}`,
    `attempts       ${job.attempts} of ${job.maxAttempts}`,
    `priority       ${job.priority}`,
    `idempotency    ${job.idempotencyKey ?? '-'}`,
    `scheduled at   ${iso(job.scheduledAt)}`,
    `started at     ${iso(job.startedAt)}`,
    `${finishedLabel(job.status).padEnd(15)}${iso(job.completedAt)}`,
    // Only a running attempt holds a lease; a retrying job's old one means nothing.
    ...(job.status === 'running' ? [`lease expires  ${iso(job.leaseExpiresAt)}`] : []),
    `last error     ${job.lastError ?? '-'}`,
    `created at     ${iso(job.createdAt)}`,
    `payload        ${JSON.stringify(job.payload)}`,
    '',
    executions.length === 0
      ? 'no attempts yet'
      : table(
          ['ATTEMPT', 'CLAIMED AT', 'STARTED AT', 'FINISHED AT', 'OUTCOME', 'DURATION', 'ERROR'],
          executions.map((e) => [
            e.attempt,
            iso(e.claimedAt),
            iso(e.startedAt),
            iso(e.finishedAt),
            e.outcome ?? 'running',
            e.durationMs === null ? '-' : `${e.durationMs} ms`,
            truncateLine(e.error ?? '', 60),
          ]),
        ),
  ];
  return lines.join('\n');
}

export function formatStats(stats: JobStats): string {
  const types = [...new Set(stats.counts.map((c) => c.jobType))].sort();
  const statuses = ['pending', 'running', 'retrying', 'completed', 'failed', 'cancelled'] as const;
  const countOf = (t: string, s: string) =>
    stats.counts.find((c) => c.jobType === t && c.status === s)?.count ?? 0;
  const parts = [
    types.length === 0
      ? 'no jobs'
      : table(
          ['TYPE', ...statuses.map((s) => s.toUpperCase())],
          types.map((t) => [t, ...statuses.map((s) => countOf(t, s))]),
        ),
    `(jobs; completed, failed and cancelled: those that finished in the last ${humanSeconds(stats.finishedWindowSeconds)})`,
    '',
    `queue depth (due now)      ${stats.queue.depth}`,
    `oldest ready job waiting   ${humanSeconds(stats.queue.oldestReadyAgeSeconds)}`,
    `running past their lease   ${stats.overdueRunning}`,
    '',
    ...(stats.paused.length === 0 ? [] : [formatPauses(stats.paused), '']),
    // Attempts, not jobs: a job that failed once and then completed counts once in each column.
    'attempts finished in the last hour:',
    stats.lastHour.length === 0
      ? '  no finished attempts'
      : table(
          ['TYPE', 'ATTEMPTS OK', 'ATTEMPTS FAILED', 'FAILURE RATE', 'AVG MS', 'MAX MS'],
          stats.lastHour.map((h) => [
            h.jobType,
            h.completed,
            h.failed,
            `${(h.failureRate * 100).toFixed(1)}%`,
            h.avgDurationMs,
            h.maxDurationMs,
          ]),
        ),
  ];
  return parts.join('\n');
}

function truncateLine(text: string, max: number): string {
  const line = text.replace(/\s+/g, ' ');
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** The paused types, with who paused each, when and why. */
export function formatPauses(paused: readonly JobTypePause[]): string {
  if (paused.length === 0) return 'no paused job types';
  return `paused (none of their due jobs is claimed until resumed):\n${table(
    ['TYPE', 'PAUSED BY', 'SINCE', 'REASON'],
    paused.map((p) => [p.jobType, p.pausedBy, iso(p.pausedAt), p.reason ?? '-']),
  )}`;
}
