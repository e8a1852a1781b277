import * as z from 'zod';
import { decimalToCents } from './money.js';

/** A BTC/USD price and the time the source priced it. */
export interface PriceQuote {
  /** US cents per BTC, exact. */
  cents: bigint;
  /** When the source priced it: the valuation refuses a quote too old (or from the future) to trust. */
  pricedAt: Date;
}

/** Where the BTC/USD price comes from. */
export interface PriceSource {
  /** How the valuation names the source in its observations and errors (the URL for an HTTP source). */
  readonly name?: string;
  /** The current BTC price, dated. Throws (a retryable failure) on any bad answer. */
  btcUsdQuote(signal?: AbortSignal): Promise<PriceQuote>;
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

/** An ISO-8601 time with its offset (`2026-12-05T10:00:00Z`): a time without one is ambiguous. */
const isoTime = z.iso.datetime({ offset: true }).transform((text) => new Date(text));
/** Unix seconds, as CoinGecko's `last_updated_at`. */
const unixSeconds = z
  .number()
  .int()
  .positive()
  .transform((seconds) => new Date(seconds * 1000));

const UNDATED =
  'the answer carries no time (expected "at" beside "price", or "bitcoin.last_updated_at" from CoinGecko ' +
  'with include_last_updated_at=true): an undated price cannot be known to be fresh';

/**
 * Accepted answers, each dated: `{ "price": "97123.45", "at": "2026-12-05T10:00:00Z" }` (price as a string
 * or number) or the CoinGecko simple-price shape with `include_last_updated_at=true`:
 * `{ "bitcoin": { "usd": 97123.45, "last_updated_at": 1796464800 } }`.
 */
export const priceResponseSchema = z
  .looseObject({
    price: positiveDecimal.optional(),
    at: isoTime.optional(),
    bitcoin: z.looseObject({ usd: positiveDecimal, last_updated_at: unixSeconds.optional() }).optional(),
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
    const pricedAt = r.price !== undefined ? r.at : r.bitcoin?.last_updated_at;
    if (pricedAt === undefined) {
      ctx.issues.push({ code: 'custom', message: UNDATED, input: r });
      return z.NEVER;
    }
    return { price, pricedAt };
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
    name: options.url,
    async btcUsdQuote(signal) {
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
      return { cents: decimalToCents(parsed.data.price), pricedAt: parsed.data.pricedAt };
    },
  };
}
