// JWT connection auth (`--jwt-secret`, `--jwks-url`): where a token comes from, verifying it with
// Hono's JWT utilities (no crypto of our own), the JWKS cache, and the topic grants a token carries.
// Runtime-free: web Request, fetch and crypto.subtle only.
import { parse as parseCookies } from 'hono/utils/cookie';
import type { AsymmetricAlgorithm } from 'hono/utils/jwt/jwa';
import type { HonoJsonWebKey } from 'hono/utils/jwt/jws';
import { decodeHeader, isTokenHeader, verify } from 'hono/utils/jwt/jwt';
import {
  JwtAlgorithmMismatch,
  JwtAlgorithmNotAllowed,
  JwtHeaderInvalid,
  JwtHeaderRequiresKid,
  JwtPayloadRequiresAud,
  JwtTokenAudience,
  JwtTokenExpired,
  JwtTokenIssuedAt,
  JwtTokenInvalid,
  JwtTokenIssuer,
  JwtTokenNotBefore,
  JwtTokenSignatureMismatched,
  type JWTPayload,
} from 'hono/utils/jwt/types';
import type { TokenInfo, TopicGrants } from '../contracts.ts';
import type { Logger } from '../log.ts';
import type { HubOptions } from '../options.ts';

export type TokenOptions = Readonly<Pick<HubOptions, 'jwtSecret' | 'jwksUrl' | 'jwtIssuer' | 'jwtAudience' | 'jwtCookie' | 'jwtTopicsClaim'>>;

/** A token that did not verify: why (short, for the 401's `error_description`), and the HTTP status (503: the keys cannot be had). */
export interface TokenRejection {
  readonly reason: string;
  readonly status: 401 | 503;
}

const SYMMETRIC = ['HS256', 'HS384', 'HS512'] as const;
const ASYMMETRIC: readonly AsymmetricAlgorithm[] = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];
const HASH = { HS256: 'SHA-256', HS384: 'SHA-384', HS512: 'SHA-512' } as const;
/**
 * How WebCrypto imports a public key for each JWS algorithm (the same parameters Hono's jws.ts
 * imports with; the verification itself is Hono's `verify`, given the imported CryptoKey).
 */
const IMPORT: Record<AsymmetricAlgorithm, RsaHashedImportParams | EcKeyImportParams | Algorithm> = {
  RS256: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
  RS384: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-384' },
  RS512: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-512' },
  PS256: { name: 'RSA-PSS', hash: 'SHA-256' },
  PS384: { name: 'RSA-PSS', hash: 'SHA-384' },
  PS512: { name: 'RSA-PSS', hash: 'SHA-512' },
  ES256: { name: 'ECDSA', namedCurve: 'P-256' },
  ES384: { name: 'ECDSA', namedCurve: 'P-384' },
  ES512: { name: 'ECDSA', namedCurve: 'P-521' },
  EdDSA: { name: 'Ed25519' },
};
/** How long fetched keys are used before they are fetched again. */
const JWKS_MAX_AGE_MS = 10 * 60_000;
/** A token naming a kid the cache lacks fetches the keys again at most this often. */
const JWKS_COOLDOWN_MS = 5000;
const JWKS_TIMEOUT_MS = 5000;
/** Longest token taken (a header, a cookie or a query parameter), and most topic patterns in a claim. */
const MAX_TOKEN_LENGTH = 8192;
const MAX_PATTERNS = 256;

/** Why a token was refused, from Hono's error types: said in the 401, so that a client's developer sees which check failed. */
function reasonOf(error: unknown): string {
  if (error instanceof JwtTokenExpired) return 'token expired';
  if (error instanceof JwtTokenSignatureMismatched) return 'bad signature';
  if (error instanceof JwtTokenIssuer) return 'wrong issuer';
  if (error instanceof JwtTokenAudience || error instanceof JwtPayloadRequiresAud) return 'wrong audience';
  if (error instanceof JwtTokenNotBefore) return 'token not yet valid';
  if (error instanceof JwtTokenIssuedAt) return 'token issued in the future';
  if (error instanceof JwtAlgorithmMismatch || error instanceof JwtAlgorithmNotAllowed) return 'algorithm not allowed';
  return 'invalid token';
}

export class TokenVerifier {
  readonly #options: TokenOptions;
  readonly #log: Logger;
  readonly #verification: { iss?: string; aud?: string[] };
  /** HMAC keys imported once per hash (an import per upgrade would cost more than the check). */
  readonly #hmacKeys = new Map<string, Promise<CryptoKey>>();
  #keys: HonoJsonWebKey[] | undefined;
  /**
   * The JWKS keys imported as CryptoKeys, once per key and algorithm: Hono's verifyWithJwks imports
   * the JWK on every verification, which cost an ES256 upgrade more than the signature check. Keyed
   * by the fetched key object, so a refresh (new objects) imports afresh and old keys are let go.
   */
  readonly #importedKeys = new WeakMap<HonoJsonWebKey, Map<string, Promise<CryptoKey>>>();
  #keysAt = 0;
  #lastUnknownKidFetch = -Infinity;
  #fetching: Promise<void> | undefined;
  /** Fetches of the JWKS so far (for tests and logs). */
  jwksFetches = 0;

  constructor(options: TokenOptions, log: Logger) {
    this.#options = options;
    this.#log = log;
    this.#verification = { ...(options.jwtIssuer ? { iss: options.jwtIssuer } : {}), ...(options.jwtAudience.length > 0 ? { aud: [...options.jwtAudience] } : {}) };
  }

  /** Fetches the JWKS ahead of the first upgrade (a failure is logged; upgrades then try again). */
  async start(): Promise<void> {
    if (this.#options.jwksUrl) await this.#refresh().catch(() => undefined);
  }

  /** The token of an upgrade request: `Authorization: Bearer`, then `?token=`, then the `--jwt-cookie` cookie. */
  tokenOf(request: Request): string | undefined {
    const authorization = request.headers.get('authorization');
    const bearer = authorization ? /^Bearer\s+(\S+)\s*$/i.exec(authorization)?.[1] : undefined;
    if (bearer) return bearer.length <= MAX_TOKEN_LENGTH ? bearer : undefined;
    const query = request.url.includes('token=') ? new URL(request.url).searchParams.get('token') : null;
    if (query) return query.length <= MAX_TOKEN_LENGTH ? query : undefined;
    const name = this.#options.jwtCookie;
    const cookies = name ? request.headers.get('cookie') : null;
    const cookie = cookies ? parseCookies(cookies, name)[name] : undefined;
    return cookie && cookie.length <= MAX_TOKEN_LENGTH ? cookie : undefined;
  }

  /** Verifies a token: its signature, `exp`/`nbf`/`iat`, the issuer and audience asked for, a `sub`, and a well-formed topics claim. */
  async verify(token: string): Promise<TokenInfo | TokenRejection> {
    let payload: JWTPayload;
    try {
      payload = this.#options.jwtSecret ? await this.#verifyHmac(token) : await this.#verifyJwks(token);
    } catch (error) {
      if (error instanceof KeysUnavailable) return { reason: 'signing keys unavailable', status: 503 };
      return { reason: reasonOf(error), status: 401 };
    }
    const { sub, exp } = payload;
    if (typeof sub !== 'string' || sub.length === 0 || sub.length > 256) return { reason: 'token has no sub', status: 401 };
    const claim = payload[this.#options.jwtTopicsClaim];
    let topics: TopicGrants | undefined;
    if (claim !== undefined) {
      topics = topicGrants(claim);
      if (!topics) return { reason: `malformed ${this.#options.jwtTopicsClaim} claim`, status: 401 };
    }
    return { subject: sub, expiresAt: typeof exp === 'number' ? exp * 1000 : undefined, claims: payload, topics };
  }

  async #verifyHmac(token: string): Promise<JWTPayload> {
    const { alg } = decodeHeader(token);
    if (!(SYMMETRIC as readonly string[]).includes(alg)) throw new JwtAlgorithmNotAllowed(alg, SYMMETRIC);
    const hash = HASH[alg as keyof typeof HASH];
    let key = this.#hmacKeys.get(hash);
    if (!key) {
      key = crypto.subtle.importKey('raw', new TextEncoder().encode(this.#options.jwtSecret), { name: 'HMAC', hash }, false, ['verify']);
      this.#hmacKeys.set(hash, key);
    }
    return verify(token, await key, { alg, ...this.#verification });
  }

  async #verifyJwks(token: string): Promise<JWTPayload> {
    const { kid } = decodeHeader(token);
    const now = Date.now();
    const known = () => this.#keys?.some((k) => k.kid === kid) ?? false;
    if (!this.#keys || now - this.#keysAt > JWKS_MAX_AGE_MS) {
      await this.#refresh().catch(() => undefined);
    } else if (kid !== undefined && !known() && now - this.#lastUnknownKidFetch >= JWKS_COOLDOWN_MS) {
      // A kid the cache lacks: the issuer may have rotated its keys. Fetched again, at most every 5 s.
      this.#lastUnknownKidFetch = now;
      await this.#refresh().catch(() => undefined);
    }
    if (!this.#keys) throw new KeysUnavailable();
    // The checks of Hono's verifyWithJwks, in its order, then its verify with the cached CryptoKey.
    const header = decodeHeader(token);
    if (!isTokenHeader(header)) throw new JwtHeaderInvalid(header);
    if (!header.kid) throw new JwtHeaderRequiresKid(header);
    const alg = header.alg as AsymmetricAlgorithm;
    if (!ASYMMETRIC.includes(alg)) throw new JwtAlgorithmNotAllowed(alg, ASYMMETRIC);
    const jwk = this.#keys.find((k) => k.kid === header.kid);
    if (!jwk) throw new JwtTokenInvalid(token);
    if (jwk.alg && jwk.alg !== alg) throw new JwtAlgorithmMismatch(jwk.alg, alg);
    return verify(token, await this.#imported(jwk, alg), { alg, ...this.#verification });
  }

  /** The JWK as a CryptoKey for `alg`, imported on first use (a key that fails to import is tried again next time). */
  #imported(jwk: HonoJsonWebKey, alg: AsymmetricAlgorithm): Promise<CryptoKey> {
    let byAlg = this.#importedKeys.get(jwk);
    if (!byAlg) this.#importedKeys.set(jwk, (byAlg = new Map()));
    let key = byAlg.get(alg);
    if (!key) {
      key = crypto.subtle.importKey('jwk', jwk as JsonWebKey, IMPORT[alg], false, ['verify']);
      key.catch(() => byAlg.delete(alg));
      byAlg.set(alg, key);
    }
    return key;
  }

  /** Fetches the JWKS (one fetch at a time; the upgrades that asked meanwhile wait for it). Old keys stay if it fails. */
  #refresh(): Promise<void> {
    this.#fetching ??= this.#fetchKeys().finally(() => (this.#fetching = undefined));
    return this.#fetching;
  }

  async #fetchKeys(): Promise<void> {
    const url = this.#options.jwksUrl;
    this.jwksFetches++;
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(JWKS_TIMEOUT_MS), headers: { Accept: 'application/json' } });
      if (!response.ok) throw new Error(`answered ${response.status}`);
      const body = (await response.json()) as { keys?: unknown };
      if (!Array.isArray(body.keys)) throw new Error('no "keys" array');
      const keys = body.keys.filter((k): k is HonoJsonWebKey => typeof k === 'object' && k !== null && typeof (k as HonoJsonWebKey).kid === 'string' && (k as { use?: unknown }).use !== 'enc');
      this.#keys = keys;
      this.#keysAt = Date.now();
      this.#log.info('jwks.fetched', { url, keys: keys.map((k) => k.kid) });
    } catch (error) {
      this.#log.warn('jwks.error', { url, error, cached: this.#keys?.length ?? 0 });
      throw error;
    }
  }
}

/** The reason given when an upgrade carries no token at all. */
export const TOKEN_REQUIRED = 'token required';

class KeysUnavailable extends Error {}

/**
 * A topics claim: `{"subscribe": [patterns], "publish": [patterns]}`. A pattern matches a topic
 * exactly, or with `*` standing for any run of characters (`chat:*`). A topic starting with `$`
 * (reserved) is matched only by a pattern that starts with `$` itself. Undefined when malformed.
 */
export function topicGrants(claim: unknown): TopicGrants | undefined {
  if (typeof claim !== 'object' || claim === null || Array.isArray(claim)) return undefined;
  const { subscribe = [], publish = [] } = claim as { subscribe?: unknown; publish?: unknown };
  const sub = compilePatterns(subscribe);
  const pub = compilePatterns(publish);
  if (!sub || !pub) return undefined;
  return {
    subscribe: subscribe as readonly string[],
    publish: publish as readonly string[],
    allows: (action, topic) => (action === 'publish' ? pub : sub)(topic),
  };
}

function compilePatterns(list: unknown): ((topic: string) => boolean) | undefined {
  if (!Array.isArray(list) || list.length > MAX_PATTERNS || !list.every((p) => typeof p === 'string' && p.length > 0 && p.length <= 256)) return undefined;
  const exact = new Set<string>();
  const globs: RegExp[] = [];
  for (const pattern of list as string[]) {
    if (!pattern.includes('*')) exact.add(pattern);
    else globs.push(new RegExp(`^${pattern.split('*').map(escapeRegExp).join('.*')}$`, 's'));
  }
  return (topic) => {
    if (exact.has(topic)) return true;
    for (const glob of globs) {
      if (topic.startsWith('$') && !glob.source.startsWith('^\\$')) continue;
      if (glob.test(topic)) return true;
    }
    return false;
  };
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A refused token as an HTTP answer: 401 with RFC 6750's `WWW-Authenticate`, or 503 + Retry-After when the keys cannot be had. */
export function tokenRefusal({ reason, status }: TokenRejection, retryAfter: number): Response {
  const headers: Record<string, string> = { 'Content-Type': 'text/plain; charset=utf-8', Connection: 'close' };
  if (status === 401) headers['WWW-Authenticate'] = reason === TOKEN_REQUIRED ? 'Bearer' : `Bearer error="invalid_token", error_description="${reason}"`;
  else headers['Retry-After'] = String(retryAfter);
  return new Response(`${status === 401 ? 'unauthorized' : 'unavailable'}: ${reason}\n`, { status, headers });
}
