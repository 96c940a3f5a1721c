// Black-box tests of JWT connection auth (`--jwt-secret`, `--jwks-url`), token expiry and refresh,
// and topic permissions from the token, run on each runtime as part of the suite.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { sign } from 'hono/utils/jwt/jwt';
import type WebSocket from 'ws';
import { closed, connect, eventually, inbox, request, runToExit, sleep, startServer, type RuntimeTarget, type ServerProcess } from '../helpers.ts';

const SECRET = 'a-test-secret-of-more-than-32-characters';
const ISSUER = 'https://issuer.test';
const AUDIENCE = 'hubbub-test';
const now = () => Math.floor(Date.now() / 1000);

type Refused = { status?: number; headers?: Record<string, string> };
const refusedWith = (url: string, options: WebSocket.ClientOptions = {}) =>
  connect(url, options).then(
    (ws) => {
      ws.terminate();
      return assert.fail('expected a refusal');
    },
    (error: Refused) => error,
  );

/** A token signed with the test secret: sub alice, the right issuer and audience, an hour to live, unless `claims` says otherwise. */
function hs(claims: Record<string, unknown> = {}, secret = SECRET, alg: 'HS256' | 'HS384' | 'HS512' = 'HS256'): Promise<string> {
  return sign({ sub: 'alice', iss: ISSUER, aud: AUDIENCE, exp: now() + 3600, ...claims }, secret, alg);
}

/** A pubsub client over a token: JSON in, JSON out, every message buffered. */
async function client(url: string, token: string) {
  const ws = await connect(`${url}?token=${token}`);
  const messages = inbox(ws);
  const next = async (timeoutMs?: number) => JSON.parse(await messages.next(timeoutMs)) as Record<string, unknown>;
  const call = async (msg: unknown) => {
    ws.send(JSON.stringify(msg));
    return next();
  };
  return { ws, next, call };
}

export function runTokens(target: RuntimeTarget): void {
  // workerd sweeps on events only: the client's pings give it some, as any traffic would.
  const nudge = (ws: WebSocket) => {
    if (!target.differences?.has('sweeps-on-events')) return () => {};
    const timer = setInterval(() => ws.readyState === 1 && ws.send('{"type":"ping"}'), 300);
    return () => clearInterval(timer);
  };
  describe(`${target.name}: JWT connection auth (--jwt-secret)`, { timeout: 90_000 }, () => {
    let server: ServerProcess;
    before(async () => {
      server = await startServer(target, [
        '--handler', 'pubsub', '--jwt-secret', SECRET, '--jwt-issuer', ISSUER, '--jwt-audience', `other,${AUDIENCE}`,
        '--jwt-cookie', 'hub_token', '--max-connections-per-principal', '2',
      ]);
    });
    after(() => server.stop());

    it('a good token admits from ?token=, Authorization: Bearer or the --jwt-cookie cookie (HS256, HS384, HS512); sub is the principal', async () => {
      const token = await hs();
      const viaQuery = await client(server.wsUrl, token);
      const viaHeader = await connect(server.wsUrl, { headers: { Authorization: `Bearer ${await hs({ sub: 'bob' }, SECRET, 'HS384')}` } });
      const viaCookie = await connect(server.wsUrl, { headers: { Cookie: `other=1; hub_token=${await hs({ sub: 'carol' }, SECRET, 'HS512')}` } });
      for (const ws of [viaHeader, viaCookie]) assert.equal(await request(ws, JSON.stringify({ type: 'subscribe', topic: 'who' })).then((t) => JSON.parse(t).type), 'subscribed');
      assert.equal((await viaQuery.call({ type: 'subscribe', topic: 'who' })).type, 'subscribed');
      const presence = (await viaQuery.call({ type: 'presence', topic: 'who' })) as { count: number; members: { principal?: string }[] };
      assert.equal(presence.count, 3);
      assert.deepEqual(presence.members.map((m) => m.principal).sort(), ['alice', 'bob', 'carol']);
      for (const ws of [viaQuery.ws, viaHeader, viaCookie]) ws.close();
      await eventually(server.stats, (s) => s.live === 0);
    });

    it('401 before the upgrade for no token, a bad signature, an expired token, a wrong audience or issuer, no sub, alg none; the reason is in WWW-Authenticate', async () => {
      const before = (await server.stats()).refused.unauthorized;
      const none = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: 'alice', exp: now() + 60 })).toString('base64url')}.`;
      const cases: [string, string | undefined, RegExp][] = [
        ['no token', undefined, /^Bearer$/],
        ['bad signature', await hs({}, 'another-secret-of-more-than-32-characters'), /bad signature/],
        ['expired', await hs({ exp: now() - 10 }), /token expired/],
        ['wrong audience', await hs({ aud: 'someone-else' }), /wrong audience/],
        ['wrong issuer', await hs({ iss: 'https://evil.test' }), /wrong issuer/],
        ['no sub', await hs({ sub: undefined }), /token has no sub/],
        ['alg none', none, /invalid_token/],
        ['garbage', 'not.a.jwt', /invalid_token/],
        ['a malformed topics claim', await hs({ topics: ['chat'] }), /malformed topics claim/],
      ];
      for (const [what, token, header] of cases) {
        const refused = await refusedWith(token === undefined ? server.wsUrl : `${server.wsUrl}?token=${token}`);
        assert.equal(refused.status, 401, what);
        assert.match(refused.headers?.['www-authenticate'] ?? '', header, what);
      }
      const stats = await server.stats();
      assert.equal(stats.refused.unauthorized, before + cases.length);
      assert.equal(stats.live, 0);
    });

    it('--max-connections-per-principal counts the token sub: a third socket for alice gets 429, bob still gets in', async () => {
      const a1 = await connect(`${server.wsUrl}?token=${await hs()}`);
      const a2 = await connect(`${server.wsUrl}?token=${await hs()}`);
      assert.equal((await refusedWith(`${server.wsUrl}?token=${await hs()}`)).status, 429);
      const bob = await connect(`${server.wsUrl}?token=${await hs({ sub: 'bob' })}`);
      for (const ws of [a1, a2, bob]) ws.close();
      await eventually(server.stats, (s) => s.live === 0);
    });

    it('topic permissions from the token claim: subscribe and publish where it grants (chat:* patterns), forbidden elsewhere; a token without the claim keeps the default rules', async () => {
      const granted = await client(server.wsUrl, await hs({ topics: { subscribe: ['chat:*', 'news'], publish: ['chat:room-1'] } }));
      assert.equal((await granted.call({ type: 'subscribe', topic: 'chat:room-1' })).type, 'subscribed');
      assert.equal((await granted.call({ type: 'subscribe', topic: 'chat:room-2' })).type, 'subscribed');
      assert.equal((await granted.call({ type: 'subscribe', topic: 'news' })).type, 'subscribed');
      for (const topic of ['sports', 'newsroom', '$system']) {
        const denied = await granted.call({ type: 'subscribe', topic });
        assert.deepEqual([denied.type, denied.code], ['error', 'forbidden'], topic);
      }
      granted.ws.send(JSON.stringify({ type: 'publish', topic: 'chat:room-1', data: 'hi', id: 1 }));
      const [message, ack] = [await granted.next(), await granted.next()];
      assert.deepEqual([message.type, ack.type, ack.id], ['message', 'published', 1]);
      const refused = await granted.call({ type: 'publish', topic: 'chat:room-2', data: 'no', id: 2 });
      assert.deepEqual([refused.type, refused.code, refused.id], ['error', 'forbidden', 2]);
      const presence = await granted.call({ type: 'presence', topic: 'sports' });
      assert.equal(presence.code, 'forbidden');

      const plain = await client(server.wsUrl, await hs({ sub: 'bob' }));
      assert.equal((await plain.call({ type: 'subscribe', topic: 'sports' })).type, 'subscribed');
      assert.equal((await plain.call({ type: 'publish', topic: 'sports', data: 1, id: 3 })).type, 'message');
      assert.equal((await plain.next()).type, 'published');
      assert.equal((await plain.call({ type: 'subscribe', topic: '$system' })).code, 'forbidden');
      granted.ws.close();
      plain.ws.close();
    });

    it('a token that expires during the connection: the expiring warning at once (under 30 s left), then close 4001 (token-expired) at exp', async () => {
      const exp = now() + 3;
      const c = await client(server.wsUrl, await hs({ exp }));
      const done = closed(c.ws, 10_000);
      const stop = nudge(c.ws);
      let warning = await c.next(3000);
      while (warning.type === 'pong') warning = await c.next(3000);
      assert.equal(warning.type, 'expiring');
      assert.ok(typeof warning.in === 'number' && warning.in > 0 && warning.in <= 3000, JSON.stringify(warning));
      const { code, reason } = await done;
      stop();
      assert.equal(code, 4001);
      assert.equal(reason, 'token expired');
      const late = Date.now() - exp * 1000;
      assert.ok(late >= 0 && late < 2500, `closed ${late} ms after exp`);
      assert.equal((await eventually(server.stats, (s) => s.released['token-expired'] === 1)).released['token-expired'], 1);
    });

    it('a refresh with a fresh token for the same sub keeps the connection past the old exp; another sub or a bad token is refused with bad-token and the old token stands', async () => {
      const exp = now() + 3;
      const c = await client(server.wsUrl, await hs({ exp }));
      if (target.differences?.has('sweeps-on-events')) {
        // A message a second later is the event that sweeps: the warning, then the pong.
        await sleep(1100);
        c.ws.send('{"type":"ping"}');
        assert.deepEqual([(await c.next(3000)).type, (await c.next(3000)).type].sort(), ['expiring', 'pong']);
      } else assert.equal((await c.next(3000)).type, 'expiring');
      const other = await c.call({ type: 'refresh', token: await hs({ sub: 'mallory', exp: now() + 60 }) });
      assert.deepEqual([other.type, other.code], ['error', 'bad-token']);
      assert.match(String(other.message), /another sub/);
      const forged = await c.call({ type: 'refresh', token: await hs({ exp: now() + 60 }, 'another-secret-of-more-than-32-characters') });
      assert.deepEqual([forged.code, forged.message], ['bad-token', 'bad signature']);
      assert.equal((await c.call({ type: 'refresh' })).code, 'bad-message');
      const freshExp = now() + 60;
      assert.deepEqual(await c.call({ type: 'refresh', token: await hs({ exp: freshExp }) }), { type: 'refreshed', exp: freshExp });
      let closedEarly = false;
      c.ws.once('close', () => (closedEarly = true));
      // Past the first token's exp (and a sweep after it), the connection still answers.
      await eventually(async () => Date.now(), (t) => t > exp * 1000 + 1500, 6000);
      assert.equal(closedEarly, false);
      assert.deepEqual(await c.call({ type: 'ping' }), { type: 'pong' });
      c.ws.close();
    });
  });

  describe(`${target.name}: JWT auth with the handler's authenticate hook, and --allow-client-publish false`, { timeout: 60_000 }, () => {
    it('JWT first, then the hook: it sees the token principal, may refuse it (403), and its principal becomes ctx.principal', async () => {
      const handler = target.testHandler.replace(/handler\.(ts|js)$/, 'jwt-hook-handler.$1');
      const server = await startServer(target, ['--handler', handler, '--jwt-secret', SECRET]);
      try {
        const ws = await connect(`${server.wsUrl}?token=${await hs({ scope: 'read' })}`);
        assert.equal(await request(ws, 'whoami'), 'alice via-hook read alice');
        assert.equal((await refusedWith(`${server.wsUrl}?token=${await hs({ sub: 'mallory' })}`)).status, 403);
        assert.equal((await refusedWith(`${server.wsUrl}?token=${await hs({ exp: now() - 5 })}`)).status, 401, 'the hook never sees a bad token');
        ws.close();
      } finally {
        await server.stop();
      }
    });

    it('--allow-client-publish false: no client may publish, not even with a token granting it; subscribing still works', async () => {
      const server = await startServer(target, ['--handler', 'pubsub', '--jwt-secret', SECRET, '--allow-client-publish', 'false']);
      try {
        const c = await client(server.wsUrl, await hs({ topics: { subscribe: ['chat:*'], publish: ['chat:*'] } }));
        assert.equal((await c.call({ type: 'subscribe', topic: 'chat:1' })).type, 'subscribed');
        const refused = await c.call({ type: 'publish', topic: 'chat:1', data: 'x', id: 9 });
        assert.deepEqual([refused.type, refused.code, refused.id], ['error', 'forbidden', 9]);
        assert.match(String(refused.message), /clients may not publish/);
        c.ws.close();
      } finally {
        await server.stop();
      }
    });

    it('bad JWT option combinations are startup errors (exit 2) naming the options', async () => {
      for (const [args, message] of [
        [['--jwt-secret', SECRET, '--jwks-url', 'http://127.0.0.1:1/jwks.json'], /--jwt-secret \(jwtSecret\) and --jwks-url \(jwksUrl\)/],
        [['--jwt-cookie', 'hub_token'], /--jwt-cookie \(jwtCookie\) needs --jwt-secret or --jwks-url/],
        [['--jwt-audience', 'x'], /--jwt-audience \(jwtAudience\) needs/],
        [['--jwt-secret', 'short'], /--jwt-secret must be '' or a secret of at least 32 characters/],
      ] as const) {
        const { code, stderr, listened } = await runToExit(target, ['--port', '0', ...args]);
        assert.equal(listened, false, args.join(' '));
        assert.equal(code, 2, `${args.join(' ')}: ${stderr}`);
        assert.match(stderr, message);
      }
    });
  });

  describe(`${target.name}: JWT connection auth (--jwks-url) and key rotation`, { timeout: 60_000 }, () => {
    let jwks: Server;
    let served: JsonWebKey[] = [];
    let fetches = 0;
    let server: ServerProcess;
    const keys: Record<string, { jwk: JsonWebKey & { kid: string; alg: string }; priv: JsonWebKey & { kid: string; alg: string } }> = {};

    async function keyPair(kid: string, alg: 'RS256' | 'ES256' | 'EdDSA') {
      const params = alg === 'RS256' ? { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' } : alg === 'ES256' ? { name: 'ECDSA', namedCurve: 'P-256' } : { name: 'Ed25519' };
      const pair = (await crypto.subtle.generateKey(params, true, ['sign', 'verify'])) as CryptoKeyPair;
      keys[kid] = {
        jwk: { ...(await crypto.subtle.exportKey('jwk', pair.publicKey)), kid, alg, use: 'sig' },
        priv: { ...(await crypto.subtle.exportKey('jwk', pair.privateKey)), kid, alg },
      };
    }
    const signed = (kid: string, claims: Record<string, unknown> = {}) => sign({ sub: 'alice', exp: now() + 3600, ...claims }, keys[kid]!.priv);

    before(async () => {
      await Promise.all([keyPair('rsa-1', 'RS256'), keyPair('ec-1', 'ES256'), keyPair('ed-2', 'EdDSA'), keyPair('never', 'ES256')]);
      served = [keys['rsa-1']!.jwk, keys['ec-1']!.jwk];
      jwks = createServer((req, res) => {
        fetches++;
        res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ keys: served }));
      });
      await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
      const { port } = jwks.address() as AddressInfo;
      server = await startServer(target, ['--handler', 'pubsub', '--jwks-url', `http://127.0.0.1:${port}/jwks.json`]);
    });
    after(async () => {
      await server.stop();
      jwks.close();
    });

    it('tokens signed RS256 and ES256 by keys of the JWKS get in; the keys are fetched once, not per upgrade', async () => {
      const a = await connect(`${server.wsUrl}?token=${await signed('rsa-1')}`);
      const b = await connect(`${server.wsUrl}?token=${await signed('ec-1')}`);
      const c = await connect(`${server.wsUrl}?token=${await signed('rsa-1')}`);
      assert.equal(fetches, 1, 'fetched at start, cached since');
      const forged = await refusedWith(`${server.wsUrl}?token=${(await signed('rsa-1')).replace(/.{4}$/, 'AAAA')}`);
      assert.equal(forged.status, 401);
      for (const ws of [a, b, c]) ws.close();
    });

    it('rotation: a token signed with a new key whose kid is unknown makes the server fetch the JWKS again (EdDSA), and a key gone from it no longer admits', async () => {
      served = [keys['ed-2']!.jwk];
      const before = fetches;
      const ws = await connect(`${server.wsUrl}?token=${await signed('ed-2')}`);
      assert.equal(fetches, before + 1, 'one more fetch for the unknown kid');
      const gone = await refusedWith(`${server.wsUrl}?token=${await signed('rsa-1')}`);
      assert.equal(gone.status, 401, 'rsa-1 left the JWKS');
      const never = await refusedWith(`${server.wsUrl}?token=${await signed('never')}`);
      assert.equal(never.status, 401);
      // Unknown kids fetch again at most every 5 s: a burst of them costs the issuer nothing more.
      assert.ok(fetches <= before + 2, `fetches: ${fetches - before}`);
      ws.close();
    });
  });
}
