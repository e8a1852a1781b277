/**
 * Splits a SQL script into single statements at top-level semicolons, leaving semicolons inside string
 * literals, quoted identifiers, dollar-quoted bodies and comments alone. The Data API runs one statement
 * per call, so migrations are always applied statement by statement, through either driver.
 */
export function splitSqlScript(script: string): string[] {
  const statements: string[] = [];
  let start = 0;
  let i = 0;
  const n = script.length;
  while (i < n) {
    const c = script[i]!;
    const next = script[i + 1];
    if (c === "'" || c === '"') {
      i++;
      while (i < n) {
        if (script[i] === c) {
          if (script[i + 1] === c) i += 2;
          else break;
        } else i++;
      }
      i++;
    } else if (c === '-' && next === '-') {
      const end = script.indexOf('\n', i);
      i = end === -1 ? n : end + 1;
    } else if (c === '/' && next === '*') {
      const end = script.indexOf('*/', i + 2);
      i = end === -1 ? n : end + 2;
    } else if (c === '$') {
      const tag = /^\$[A-Za-z_0-9]*\$/.exec(script.slice(i));
      if (tag && !/[A-Za-z0-9_]/.test(script[i - 1] ?? '')) {
        const end = script.indexOf(tag[0], i + tag[0].length);
        i = end === -1 ? n : end + tag[0].length;
      } else i++;
    } else if (c === ';') {
      pushStatement(statements, script.slice(start, i));
      i++;
      start = i;
    } else i++;
  }
  pushStatement(statements, script.slice(start));
  return statements;
}

function pushStatement(out: string[], text: string): void {
  const withoutComments = text.replace(/--[^\n]*/g, '').trim();
  if (withoutComments.length > 0) out.push(text.trim());
}
