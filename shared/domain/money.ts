/** Money is integer cents (bigint); decimal strings are parsed exactly, never through floating point. */

/** "97123.45" → 9712345n. Rounds half up beyond the cent. Throws on anything that is not a plain decimal. */
export function decimalToCents(text: string): bigint {
  const m = /^(\d+)(?:\.(\d+))?$/.exec(text.trim());
  if (!m) throw new Error(`"${text}" is not a decimal amount`);
  const whole = BigInt(m[1]!);
  const fraction = m[2] ?? '';
  let cents = whole * 100n + BigInt(`${fraction}00`.slice(0, 2));
  if (fraction.length > 2 && fraction[2]! >= '5') cents += 1n;
  return cents;
}

/** 9712345n → "97,123.45" */
export function formatCents(cents: bigint): string {
  const negative = cents < 0n;
  const abs = negative ? -cents : cents;
  const whole = (abs / 100n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return `${negative ? '-' : ''}${whole}.${(abs % 100n).toString().padStart(2, '0')}`;
}

/** A date as YYYY-MM-DD (UTC). */
export function utcDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

export function addDays(day: string, days: number): string {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + days);
  return utcDay(d);
}
