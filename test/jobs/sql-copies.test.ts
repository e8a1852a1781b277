import { readdir, readFile } from 'node:fs/promises';
import { describe, expect, test } from 'vitest';
import { defaultMigrationsDir } from '../../shared/db/migrate.js';
import * as sql from '../../shared/jobs/sql.js';

/**
 * Every lifecycle statement is written out whole, so a few blocks are written several times: the claim's
 * UPDATE, the retry rule, the close of an attempt's execution row... These tests hold each copy to the
 * first one, so a change made to one copy and not to the others fails here, naming the statements.
 *
 * To change a block on purpose, change every copy. To add a statement that holds a block, or a block, edit
 * BLOCKS below: each names where a copy starts and ends (after comments are dropped and whitespace is
 * collapsed, see `flatten`), the spellings that differ on purpose, and the statements that hold it. A
 * copy that differs from the one most statements hold fails, named; so does a statement that holds a copy
 * and is not listed.
 */

/** Drops `--` comments and collapses whitespace, so only the SQL itself is compared. */
function flatten(text: string): string {
  return text
    .replace(/--[^\n]*/g, ' ')
    .replace(/\s+/g, ' ')
    .replace(/\(\s+/g, '(')
    .replace(/\s+\)/g, ')')
    .trim();
}

/**
 * Each SQL function's body and each view's query as its last migration defines it (`CREATE [OR REPLACE]
 * FUNCTION name(` ... `$$;`, `CREATE [OR REPLACE] VIEW name AS` ... `;`).
 */
async function latestFunctionBodies(): Promise<Record<string, string>> {
  const files = (await readdir(defaultMigrationsDir)).filter((f) => /^\d{4}_[\w-]+\.sql$/.test(f)).sort();
  const bodies: Record<string, string> = {};
  for (const file of files) {
    const text = await readFile(`${defaultMigrationsDir}/${file}`, 'utf8');
    for (const m of text.matchAll(/CREATE (?:OR REPLACE )?FUNCTION (\w+)\(([\s\S]*?)\$\$;/g))
      bodies[m[1]!] = m[2]!;
    for (const m of text.matchAll(/CREATE (?:OR REPLACE )?VIEW (\w+) AS([\s\S]*?);/g)) bodies[m[1]!] = m[2]!;
  }
  return bodies;
}

/** A statement the shapes of the console's filters build: one representative shape each. */
const shape = { status: null, jobType: true, key: false, from: false, to: false } as const;

/** Every statement that may hold a copy, by name: the exported texts, the built ones, the SQL functions. */
async function statements(): Promise<Record<string, string>> {
  const all: Record<string, string> = {};
  for (const [name, value] of Object.entries(sql)) if (typeof value === 'string') all[name] = value;
  all['bulkCancelSql(shape)'] = sql.bulkCancelSql(shape);
  all['bulkRetrySql(shape)'] = sql.bulkRetrySql(shape);
  all['jobsPageSql(shape)'] = sql.jobsPageSql(shape, true);
  all['countForBulkSql(shape)'] = sql.countForBulkSql(shape, 'retryable');
  Object.assign(all, await latestFunctionBodies());
  return all;
}

interface Block {
  name: string;
  /** Where a copy begins (matched on the flattened, normalised text). */
  start: RegExp;
  /** Where it ends: the first occurrence after the start (and before the next copy), included. */
  end: string;
  /** Spellings that differ on purpose, replaced in the whole statement before the copies are cut out. */
  normalise?: [RegExp, string][];
  /** The statements that hold it (the first one's copy wins a tie). */
  in: string[];
}

const NOW = 'COALESCE(CAST(:now AS timestamptz), now())';
/** The limited claim function's parameters, as the statements spell the same values. */
const FUNCTION_PARAMETERS: [RegExp, string][] = [
  [/\bp_now\b/g, NOW],
  [/\bp_claim_token\b/g, 'CAST(:claim_token AS uuid)'],
  [/\bp_start_now\b/g, ':start_now'],
  [/\bp_dispatch_lease_seconds\b/g, 'CAST(:dispatch_lease_seconds AS integer)'],
];
/** A resendable claim takes nothing when its first run already did (`prior`). */
const PRIOR_LIMIT: [RegExp, string] = [
  /\(CASE WHEN EXISTS \(SELECT 1 FROM prior\) THEN 0 ELSE CAST\(:limit AS integer\) END\)/g,
  'CAST(:limit AS integer)',
];

const BLOCKS: Block[] = [
  {
    name: 'the claim: what a claimed row becomes',
    start: /UPDATE jobs j SET status = 'running'/g,
    end: `updated_at = ${NOW}`,
    normalise: FUNCTION_PARAMETERS,
    in: [
      'claimDueJobsSql',
      'claimDueJobsAsDocumentSql',
      'claimDueJobsForWorkerSql',
      'lana_jobs_claim_limited',
      'lana_jobs_claim_slotted',
      'completeAndClaimBehindSql',
      'claimWithinHoldsSql',
    ],
  },
  {
    name: 'the plain claim: the due rows of each ready priority, locked in claim order',
    start: /SELECT due\.ctid FROM ready_priorities r/g,
    end: `WHERE r.scheduled_at <= ${NOW}`,
    normalise: [PRIOR_LIMIT, [/LIMIT :limit\b/g, 'LIMIT CAST(:limit AS integer)']],
    in: ['claimDueJobsSql', 'claimDueJobsAsDocumentSql', 'claimDueJobsForWorkerSql'],
  },
  {
    name: 'ready_priorities: the earliest ready job of each priority',
    start: /\bready_priorities AS \(/g,
    end: 'ORDER BY priority, scheduled_at LIMIT 1) n)',
    normalise: [[/\bearliest\b/g, 'ready_priorities']],
    in: [
      'claimDueJobsSql',
      'claimDueJobsAsDocumentSql',
      'claimDueJobsForWorkerSql',
      'claimLimitedForWorkerSql',
      'queueStateSql',
      'nextDueAtSql',
    ],
  },
  {
    name: "a resent claim's first answer (prior)",
    start: /\bprior AS \(/g,
    end: "AND status = 'running')",
    normalise: [[/:token\b/g, ':claim_token']],
    in: ['claimDueJobsSql', 'claimLimitedSql', 'completeAndClaimNextSql'],
  },
  {
    name: 'the limited claim: the call',
    // The worker's claim and completeAndClaimNextSql call it otherwise on purpose (slots held per worker;
    // one job under a dispatch lease, its own token).
    start: /lana_jobs_claim_slotted\(CAST\(:limits AS jsonb\), CAST\(:only_type AS text\), (?=\(CASE|CAST)/g,
    end: 'NULL, NULL, NULL, NULL)',
    normalise: [PRIOR_LIMIT],
    in: ['claimLimitedSql', 'claimLimitedAsDocumentSql'],
  },
  {
    name: "the claim's document",
    start: /SELECT COALESCE\(json_agg\(json_build_array\(id, job_type, payload/g,
    end: 'AS jobs',
    in: [
      'claimDueJobsAsDocumentSql',
      'claimDueJobsForWorkerSql',
      'claimLimitedAsDocumentSql',
      'claimLimitedForWorkerSql',
    ],
  },
  {
    name: "a short claim's next due time",
    start: /CASE WHEN count\(\*\) < :limit THEN \(SELECT min\(ahead\.scheduled_at\)/g,
    end: 'END AS next_due_at',
    // The claim within holds walks the ready (type, priority) pairs, not the priorities.
    normalise: [
      [/\bready_types\b/g, 'ready_priorities'],
      [/ AND job_type = r\.job_type/g, ''],
    ],
    in: ['claimDueJobsForWorkerSql', 'claimLimitedForWorkerSql', 'claimWithinHoldsSql'],
  },
  {
    name: 'the completion of an attempt (fenced)',
    start: /SET status = 'completed', completed_at/g,
    end: "AND j.status = 'running'",
    // The batch form also names its ids as an array, so the rows are found through the primary key.
    normalise: [[/j\.id = ANY\(ARRAY\(SELECT id FROM items\)\) AND /g, '']],
    in: ['completeAttemptsSql', 'completeAndClaimNextSql', 'completeAndClaimBehindSql'],
  },
  {
    name: "an eager start's row: inserted running, its first attempt begun and leased",
    start:
      /INSERT INTO jobs \(id, job_type, payload, scheduled_at, max_attempts, backoff_base_seconds, backoff_cap_seconds, lease_seconds, priority, idempotency_key, created_at, updated_at, status, attempts, claimed_at, started_at, lease_expires_at\) SELECT/g,
    end: 'make_interval(secs => CAST(:lease_seconds AS integer))',
    in: ['insertStartedJobSql', 'insertStartedJobTakingSlotSql'],
  },
  {
    name: 'the retry rule (a failed attempt: retrying, pending or failed)',
    start: /UPDATE jobs j SET status = CASE WHEN x\.permanent/g,
    end: 'j.started_at AS run_started_at',
    in: ['failAttemptsFromInputSql', 'rescueExpiredLeasesSql'],
  },
  {
    name: "a resent failure report, and the failure's answer",
    start: /\bresent AS \(SELECT j\.id, j\.job_type, j\.attempts, j\.status/g,
    end: 'FROM resent',
    in: ['failAttemptsFromInputSql', 'rescueExpiredLeasesSql'],
  },
  {
    name: "the close of an attempt's execution row",
    // The triggers of migration 0026 insert a row they were given (VALUES), not one closed here.
    start: /INSERT INTO job_execution_records \([^)]*\) SELECT /g,
    end: '* 1000)::integer)',
    in: [
      'failAttemptsFromInputSql',
      'rescueExpiredLeasesSql',
      'releaseClaimsSql',
      'cancelJobSql',
      'bulkCancelSql(shape)',
    ],
  },
  {
    name: "an attempt's claim time (rows claimed before claimed_at existed: from the lease)",
    start: /COALESCE\(j\.claimed_at, /g,
    end: 'j.lease_seconds))',
    // A completed job's record, read from its row by the view, or written by the trigger from the row it was.
    normalise: [[/\bOLD\./g, 'j.']],
    in: [
      'job_executions',
      'lana_jobs_completion_recorded',
      'completeAttemptsSql',
      'completeAndClaimNextSql',
      'completeAndClaimBehindSql',
      'failAttemptsFromInputSql',
      'rescueExpiredLeasesSql',
      'releaseClaimsSql',
      'cancelJobSql',
      'bulkCancelSql(shape)',
      'executionsByJobSql',
    ],
  },
  {
    name: 'the cancel of a job (its running attempt closed)',
    start: /UPDATE jobs j SET status = 'cancelled'/g,
    end: "WHERE j.id = c.id AND j.status IN ('pending', 'retrying', 'running')",
    normalise: [[/COALESCE\(CAST\(:reason AS text\), ('cancelled by an operator')\)/g, '$1']],
    in: ['cancelJobSql', 'bulkCancelSql(shape)'],
  },
  {
    name: "a cancelled attempt's execution row",
    start: /FROM \(SELECT id, attempts, attempt_claimed_at AS claimed_at/g,
    end: "WHERE was = 'running') e",
    in: ['cancelJobSql', 'bulkCancelSql(shape)'],
  },
];

/** Each copy of `block` in `text`: the statement flattened and normalised, then cut at the markers. */
function copies(block: Block, text: string, statement: string): string[] {
  let flat = flatten(text);
  for (const [pattern, replacement] of block.normalise ?? []) flat = flat.replace(pattern, replacement);
  const starts = [...flat.matchAll(block.start)].map((m) => m.index);
  return starts.map((from, i) => {
    const at = flat.indexOf(block.end, from);
    if (at < 0 || at >= (starts[i + 1] ?? flat.length))
      throw new Error(
        `${statement}: a copy of "${block.name}" starts, but its end ("${block.end}") does not follow it before the next copy`,
      );
    return flat.slice(from, at + block.end.length);
  });
}

describe('the repeated SQL blocks are identical in every statement that holds them', async () => {
  const all = await statements();

  test.each(BLOCKS.map((b) => [b.name, b] as const))('%s', (_name, block) => {
    const missing = block.in.filter((s) => all[s] === undefined);
    expect(missing, 'statements listed in BLOCKS that no longer exist').toEqual([]);

    const held = block.in.map((s) => ({ statement: s, copies: copies(block, all[s]!, s) }));
    const without = held.filter((h) => h.copies.length === 0).map((h) => h.statement);
    expect(without, 'statements listed that hold no copy (the block changed shape: update BLOCKS)').toEqual(
      [],
    );

    // The copy most statements hold (the first statement's on a tie): a change to one copy names that one.
    const votes = new Map<string, number>();
    for (const h of held) for (const c of new Set(h.copies)) votes.set(c, (votes.get(c) ?? 0) + 1);
    const canonical = [...votes.entries()].reduce((best, next) => (next[1] > best[1] ? next : best))[0];
    const holder = held.find((h) => h.copies.includes(canonical))!.statement;
    const drifted = held.filter((h) => h.copies.some((c) => c !== canonical));
    // The first drifted copy, shown against the canonical one.
    const first = drifted[0]?.copies.find((c) => c !== canonical);
    expect(
      { drifted: drifted.map((h) => h.statement), copy: first ?? canonical },
      `copies of "${block.name}" differ from ${holder}'s`,
    ).toEqual({ drifted: [], copy: canonical });

    const unlisted = Object.entries(all)
      .filter(([name, text]) => !block.in.includes(name) && copies(block, text, name).length > 0)
      .map(([name]) => name);
    expect(unlisted, `statements holding a copy of "${block.name}" not listed in BLOCKS`).toEqual([]);
  });

  test('a changed copy is caught, naming its statement', () => {
    const block = BLOCKS.find((b) => b.name.startsWith('the retry rule'))!;
    const rescue = all.rescueExpiredLeasesSql!.replace('power(2, j.attempts', 'power(3, j.attempts');
    expect(rescue).not.toBe(all.rescueExpiredLeasesSql);
    const [canonical] = copies(block, all.failAttemptsFromInputSql!, 'fail');
    expect(copies(block, rescue, 'rescue')).not.toEqual([canonical]);
    expect(copies(block, all.rescueExpiredLeasesSql!, 'rescue')).toEqual([canonical]);
  });
});
