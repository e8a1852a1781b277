import { describe, expect, test } from 'vitest';
import { newJobId } from '../../shared/jobs/ids.js';

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const msOf = (id: string) => Number.parseInt(id.replace(/-/g, '').slice(0, 12), 16);

describe('job ids', () => {
  test('UUID version 7: version and variant bits, the creation millisecond up front', () => {
    const before = Date.now();
    const id = newJobId();
    const after = Date.now();
    expect(id).toMatch(UUID_V7);
    expect(msOf(id)).toBeGreaterThanOrEqual(before);
    expect(msOf(id)).toBeLessThanOrEqual(after + 1);
  });

  test('strictly increasing within a process, even past 4,096 in one millisecond, and unique', () => {
    const ids = Array.from({ length: 20_000 }, () => newJobId());
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.every((id) => UUID_V7.test(id))).toBe(true);
  });

  test('a clock that steps back does not break the order', () => {
    const a = newJobId(Date.now() + 5);
    const b = newJobId(Date.now() - 60_000);
    expect(b > a).toBe(true);
  });
});
