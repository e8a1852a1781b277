/** A small structured logger for the local runtime and CLI (Lambda uses Powertools Logger instead). */
export interface Logger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

/** Human-readable lines on stderr, or JSON lines with `json: true`. */
export function createConsoleLogger(
  options: { json?: boolean; stream?: NodeJS.WritableStream } = {},
): Logger {
  const stream = options.stream ?? process.stderr;
  const write = (level: string, message: string, fields?: Record<string, unknown>) => {
    if (options.json) {
      stream.write(`${JSON.stringify({ level, time: new Date().toISOString(), message, ...fields })}\n`);
      return;
    }
    const extra = fields && Object.keys(fields).length > 0 ? ` ${formatFields(fields)}` : '';
    stream.write(`${new Date().toISOString().slice(11, 23)} ${level.padEnd(5)} ${message}${extra}\n`);
  };
  return {
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
  };
}

function formatFields(fields: Record<string, unknown>): string {
  return Object.entries(fields)
    .map(
      ([k, v]) =>
        `${k}=${v instanceof Date ? v.toISOString() : typeof v === 'string' ? v : JSON.stringify(v)}`,
    )
    .join(' ');
}
