import * as z from 'zod';
import { decimalToCents } from './money.js';

/** Where the BTC/USD price comes from. */
export interface PriceSource {
  /** The current BTC price in US cents. Throws (a retryable failure) on any bad answer. */
  btcUsdCents(signal?: AbortSignal): Promise<bigint>;
}

const positiveDecimal = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const text = typeof value === 'number' ? String(value) : value.trim();
  if (!/^\d+(\.\d+)?$/.test(text)) {
    ctx.issues.push({
      code: 'custom',
      message: `expected a positive decimal number, got ${JSON.stringify(value)}`,
      input: value,
    });
    return z.NEVER;
  }
  if (decimalToCents(text) <= 0n) {
    ctx.issues.push({ code: 'custom', message: 'price must be positive', input: value });
    return z.NEVER;
  }
  return text;
});

/**
 * Accepted answers: `{ "price": "97123.45" }` (string or number) or the CoinGecko simple-price shape
 * `{ "bitcoin": { "usd": 97123.45 } }`.
 */
export const priceResponseSchema = z
  .looseObject({
    price: positiveDecimal.optional(),
    bitcoin: z.looseObject({ usd: positiveDecimal }).optional(),
  })
  .transform((r, ctx) => {
    const price = r.price ?? r.bitcoin?.usd;
    if (price === undefined) {
      ctx.issues.push({
        code: 'custom',
        message: 'no price in the answer (expected "price" or "bitcoin.usd")',
        input: r,
      });
      return z.NEVER;
    }
    return price;
  });

export class PriceSourceError extends Error {
  override readonly name = 'PriceSourceError';
}

/** Fetches the price over HTTP with a timeout; the answer is validated before anything uses it. */
export function createHttpPriceSource(options: { url: string; timeoutMs?: number }): PriceSource {
  const timeoutMs = options.timeoutMs ?? 5000;
  // Checked at construction, so a misconfigured function fails at start-up rather than on every run.
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 120_000) {
    throw new Error(`price source timeout must be 1 to 120000 ms, got ${String(options.timeoutMs)}`);
  }
  if (!URL.canParse(options.url) || !/^https?:$/.test(new URL(options.url).protocol)) {
    throw new Error(`price source URL must be an http(s) URL, got "${options.url}"`);
  }
  return {
    async btcUsdCents(signal) {
      const timeout = AbortSignal.timeout(timeoutMs);
      let res: Response;
      try {
        res = await fetch(options.url, {
          signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
          headers: { accept: 'application/json' },
        });
      } catch (err) {
        if (timeout.aborted) throw new PriceSourceError(`price source timed out after ${timeoutMs} ms`);
        throw new PriceSourceError(`price source unreachable: ${(err as Error).message}`);
      }
      if (!res.ok) throw new PriceSourceError(`price source answered HTTP ${res.status}`);
      let text: string;
      try {
        text = await res.text();
      } catch (err) {
        if (timeout.aborted) throw new PriceSourceError(`price source timed out after ${timeoutMs} ms`);
        throw new PriceSourceError(`price source response broke off: ${(err as Error).message}`);
      }
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        throw new PriceSourceError('price source answered with something that is not JSON');
      }
      const parsed = priceResponseSchema.safeParse(body);
      if (!parsed.success) {
        throw new PriceSourceError(
          `price source answer rejected: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ')}`,
        );
      }
      return decimalToCents(parsed.data);
    },
  };
}
