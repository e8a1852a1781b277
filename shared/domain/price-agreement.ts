/**
 * The exact arithmetic a valuation judges prices by: shares as fractions of integers, the median of
 * quotes, whether quotes agree within a tolerance, and whether a quote is within the jump guard of the
 * reference. All in integer cents: no float touches a price.
 */

/** A share as an exact fraction: "0.02" is 2/100. */
export interface Share {
  num: bigint;
  den: bigint;
  text: string;
}

export function share(text: string, what: string): Share {
  const m = /^(\d+)(?:\.(\d+))?$/.exec(text);
  if (!m || Number(text) <= 0 || Number(text) >= 1) {
    throw new Error(`${what} must be a decimal share between 0 and 1 such as "0.2", got "${text}"`);
  }
  const fraction = m[2] ?? '';
  return { num: BigInt(`${m[1]}${fraction}`), den: 10n ** BigInt(fraction.length), text };
}

export const percent = (s: Share): string => `${Number(s.text) * 100} %`;

function sorted(values: readonly bigint[]): bigint[] {
  return [...values].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** The median; for an even count, the mean of the middle two (rounded down, in the lender's favour). */
export function median(values: readonly bigint[]): bigint {
  const s = sorted(values);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2n;
}

/** True when the quotes lie within `tolerance` of the lowest of them. */
export function agree(values: readonly bigint[], tolerance: Share): boolean {
  if (values.length < 2) return true;
  const s = sorted(values);
  return (s[s.length - 1]! - s[0]!) * tolerance.den <= s[0]! * tolerance.num;
}

/** The largest set of quotes that agree with each other (the lower one first on a tie). */
export function largestAgreeingSet(values: readonly bigint[], tolerance: Share): bigint[] {
  const s = sorted(values);
  let best: bigint[] = [];
  for (let i = 0; i < s.length; i++) {
    let j = i;
    while (j + 1 < s.length && agree([s[i]!, s[j + 1]!], tolerance)) j++;
    if (j - i + 1 > best.length) best = s.slice(i, j + 1);
  }
  return best;
}

/** True when `quote` lies within `limit` of `reference` (exactly at the limit is within). */
export function withinJump(quote: bigint, reference: bigint, limit: Share): boolean {
  const distance = quote > reference ? quote - reference : reference - quote;
  return distance * limit.den <= reference * limit.num;
}
