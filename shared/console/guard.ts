import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { getCookie, setCookie } from 'hono/cookie';

/**
 * Who may use the console, and which requests may change anything: the console's token (when one is
 * configured), a size limit on request bodies, and cross-site request protection for every POST.
 */

export type Vars = { Variables: { nonce: string } };

const TOKEN_COOKIE = 'lana_console_token';

/**
 * The largest request body read: the enqueue form's 16 KiB payload, even with every character
 * percent-encoded from three bytes of UTF-8 (9 bytes each), fits. A larger body is refused before it is
 * read, parsed or checked for its CSRF token.
 */
export const MAX_BODY_BYTES = 256 * 1024;

export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** With a token configured, every request presents it (bearer header, cookie, or `?token=` once). */
export function tokenGuard(token: string | undefined): MiddlewareHandler<Vars> {
  return async (c, next) => {
    if (token !== undefined) {
      const bearer = c.req.header('authorization')?.replace(/^Bearer\s+/i, '');
      const query = c.req.query('token');
      if (query !== undefined && sameSecret(query, token)) {
        setCookie(c, TOKEN_COOKIE, token, { httpOnly: true, sameSite: 'Strict', path: '/' });
        const url = new URL(c.req.url);
        url.searchParams.delete('token');
        return c.redirect(`${url.pathname}${url.search}`, 303);
      }
      const presented = bearer ?? getCookie(c, TOKEN_COOKIE);
      if (presented === undefined || !sameSecret(presented, token)) {
        return c.text('401: this console requires its token (Authorization: Bearer, or ?token=)', 401);
      }
    }
    const nonce = randomBytes(16).toString('base64');
    c.set('nonce', nonce);
    await next();
    c.header(
      'Content-Security-Policy',
      `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'unsafe-inline'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'`,
    );
    c.header('X-Content-Type-Options', 'nosniff');
    c.header('Referrer-Policy', 'no-referrer');
  };
}

/** Bodies over `MAX_BODY_BYTES` are refused with 413, by their Content-Length or while streaming. */
export function bodySizeGuard(maxBytes = MAX_BODY_BYTES): MiddlewareHandler<Vars> {
  return bodyLimit({
    maxSize: maxBytes,
    onError: (c) =>
      c.text(`413: a request body is at most ${maxBytes} bytes; nothing was read or changed`, 413),
  });
}

/**
 * Whether a request's Origin header names another site. A header that is not an origin at all (garbage,
 * an opaque scheme) counts as another site: refused, never an error.
 */
function fromAnotherOrigin(origin: string | undefined, host: string | undefined): boolean {
  if (origin === undefined || origin === 'null') return false;
  if (!URL.canParse(origin)) return true;
  const url = new URL(origin);
  return (url.protocol !== 'http:' && url.protocol !== 'https:') || url.host !== host;
}

/**
 * Cross-site request protection: a POST must come from this origin (Origin, Sec-Fetch-Site) and carry the
 * console's CSRF token in its form. The headers are checked first, so a cross-site body is never parsed.
 */
export function csrfGuard(
  csrf: string,
  refused: (c: Context<Vars>) => Response | Promise<Response>,
): MiddlewareHandler<Vars> {
  return async (c, next) => {
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD') {
      if (
        fromAnotherOrigin(c.req.header('origin'), c.req.header('host')) ||
        c.req.header('sec-fetch-site') === 'cross-site'
      ) {
        return refused(c);
      }
      let presented = '';
      try {
        const form = await c.req.parseBody();
        presented = typeof form._csrf === 'string' ? form._csrf : '';
      } catch {
        // A body that is not a form carries no token.
      }
      if (!sameSecret(presented, csrf)) return refused(c);
    }
    await next();
  };
}
