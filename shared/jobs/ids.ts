import { randomFillSync } from 'node:crypto';
import { JobInputError } from './errors.js';
import { truncate } from './registry.js';

/**
 * Job ids: UUID version 7 (RFC 9562), made where the job is enqueued. The first 48 bits are Unix
 * milliseconds, so new ids land at the right edge of the primary-key index; the next 12 bits count up
 * within a millisecond (method 1 of RFC 9562 §6.2), so the ids of one process, and of one bulk enqueue,
 * increase in the order the jobs were given; the last 62 bits are random. Making them here rather than in
 * the database spares the server a function call per row, which a bulk enqueue of 10,000 jobs feels.
 * The database keeps its own `lana_uuid_v7()` default for rows inserted by hand.
 */
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const POOL_IDS = 1024;
const pool = Buffer.allocUnsafe(POOL_IDS * 8);
let poolNext = POOL_IDS;
let lastMs = 0;
let counter = 0;

export function newJobId(nowMs = Date.now()): string {
  if (nowMs > lastMs) {
    lastMs = nowMs;
    counter = 0;
  } else if (++counter > 0xfff) {
    // 4,096 ids in one millisecond: borrow the next millisecond, as the RFC allows.
    lastMs++;
    counter = 0;
  }
  if (poolNext === POOL_IDS) {
    randomFillSync(pool);
    poolNext = 0;
  }
  const r = poolNext++ * 8;
  const ms = lastMs;
  const hi = Math.floor(ms / 2 ** 16); // top 32 bits of the 48-bit timestamp
  const lo = ms % 2 ** 16;
  return (
    HEX[(hi >>> 24) & 0xff]! +
    HEX[(hi >>> 16) & 0xff]! +
    HEX[(hi >>> 8) & 0xff]! +
    HEX[hi & 0xff]! +
    '-' +
    HEX[lo >>> 8]! +
    HEX[lo & 0xff]! +
    '-' +
    HEX[0x70 | (counter >>> 8)]! +
    HEX[counter & 0xff]! +
    '-' +
    HEX[0x80 | (pool[r]! & 0x3f)]! +
    HEX[pool[r + 1]!]! +
    '-' +
    HEX[pool[r + 2]!]! +
    HEX[pool[r + 3]!]! +
    HEX[pool[r + 4]!]! +
    HEX[pool[r + 5]!]! +
    HEX[pool[r + 6]!]! +
    HEX[pool[r + 7]!]!
  );
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Job ids are UUIDs; anything else is rejected before it reaches SQL. */
export function assertUuid(id: string): void {
  if (typeof id !== 'string' || !UUID_RE.test(id)) {
    throw new JobInputError('invalid_id', `"${truncate(String(id), 60)}" is not a job id (a UUID)`);
  }
}
