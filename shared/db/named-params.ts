/**
 * Finds the `:name` placeholders of a statement, skipping `::type` casts, string literals, quoted
 * identifiers, dollar-quoted bodies and comments. Both drivers rely on it: node-postgres rewrites the
 * placeholders to `$1…$n`; the Data API test fixture does the same on the server side.
 */
export interface ParsedStatement {
  /** The statement with every placeholder replaced by `$1…$n` (one number per distinct name). */
  positional: string;
  /** Names in `$n` order. */
  names: string[];
  /** Each placeholder's place in the original statement (`:name` spans `start` to `end`), in order. */
  spans: { name: string; start: number; end: number }[];
}

const cache = new Map<string, ParsedStatement>();

export function parseNamedParams(sql: string): ParsedStatement {
  const cached = cache.get(sql);
  if (cached) return cached;
  const names: string[] = [];
  const spans: ParsedStatement['spans'] = [];
  const index = new Map<string, number>();
  let out = '';
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i]!;
    const next = sql[i + 1];
    if ((c === 'E' || c === 'e') && next === "'" && !/[A-Za-z0-9_]/.test(sql[i - 1] ?? '')) {
      // An escape string: a backslash escapes the next character, a quote included.
      const end = skipQuoted(sql, i + 1, "'", true);
      out += sql.slice(i, end);
      i = end;
    } else if (c === "'" || c === '"') {
      const end = skipQuoted(sql, i, c);
      out += sql.slice(i, end);
      i = end;
    } else if (c === '-' && next === '-') {
      const end = sql.indexOf('\n', i);
      const stop = end === -1 ? n : end;
      out += sql.slice(i, stop);
      i = stop;
    } else if (c === '/' && next === '*') {
      const stop = skipBlockComment(sql, i);
      out += sql.slice(i, stop);
      i = stop;
    } else if (c === '$' && /[A-Za-z_$]/.test(next ?? '')) {
      const tagMatch = /^\$[A-Za-z_0-9]*\$/.exec(sql.slice(i));
      if (tagMatch) {
        const tag = tagMatch[0];
        const end = sql.indexOf(tag, i + tag.length);
        const stop = end === -1 ? n : end + tag.length;
        out += sql.slice(i, stop);
        i = stop;
      } else {
        out += c;
        i++;
      }
    } else if (c === ':' && next === ':') {
      out += '::';
      i += 2;
    } else if (c === ':' && /[A-Za-z_]/.test(next ?? '')) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(sql.slice(i + 1))!;
      const name = m[0];
      let pos = index.get(name);
      if (pos === undefined) {
        names.push(name);
        pos = names.length;
        index.set(name, pos);
      }
      out += `$${pos}`;
      spans.push({ name, start: i, end: i + 1 + name.length });
      i += 1 + name.length;
    } else {
      out += c;
      i++;
    }
  }
  const parsed = { positional: out, names, spans };
  if (cache.size < 5000) cache.set(sql, parsed);
  return parsed;
}

/** The end of the block comment at `start`: PostgreSQL's block comments nest. */
function skipBlockComment(sql: string, start: number): number {
  let depth = 0;
  let i = start;
  while (i < sql.length) {
    if (sql.startsWith('/*', i)) {
      depth++;
      i += 2;
    } else if (sql.startsWith('*/', i)) {
      depth--;
      i += 2;
      if (depth === 0) return i;
    } else i++;
  }
  return sql.length;
}

function skipQuoted(sql: string, start: number, quote: string, backslashEscapes = false): number {
  let i = start + 1;
  while (i < sql.length) {
    if (backslashEscapes && sql[i] === '\\') {
      i += 2;
      continue;
    }
    if (sql[i] === quote) {
      if (sql[i + 1] === quote) {
        i += 2;
        continue;
      }
      return i + 1;
    }
    i++;
  }
  return sql.length;
}

/** `sql` with each placeholder `:name` for which `wrap` gives a text replaced by that text. */
export function rewritePlaceholders(sql: string, wrap: (name: string) => string | undefined): string {
  let out = '';
  let from = 0;
  for (const span of parseNamedParams(sql).spans) {
    const replacement = wrap(span.name);
    if (replacement === undefined) continue;
    out += sql.slice(from, span.start) + replacement;
    from = span.end;
  }
  return from === 0 ? sql : out + sql.slice(from);
}
