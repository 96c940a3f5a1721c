// Suite group: --tls-cert / --tls-key. A self-signed certificate for 127.0.0.1 is made with openssl
// for the run, and every client checks it (given as its CA): https:// and wss:// work, a client that
// does not trust it fails the handshake, the admin listener is on https too, and bad TLS options are
// startup errors. workerd has no TLS of its own (the platform's): skipped there.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BURST } from '../../src/runtime/node/sockets.ts';
import { connect, eventually, httpsGet, PREFIX, request, runToExit, startServer, type RuntimeTarget } from '../helpers.ts';

interface Certificate {
  dir: string;
  cert: string;
  key: string;
  /** The certificate's PEM text: what a client trusts. */
  ca: string;
  /** A valid private key that is not the certificate's. */
  otherKey: string;
}

/** A fresh self-signed certificate for 127.0.0.1 (IP subjectAltName, so hostname checking passes), valid a day. */
function makeCertificate(): Certificate {
  const dir = mkdtempSync(path.join(tmpdir(), 'hubbub-tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  const otherKey = path.join(dir, 'other-key.pem');
  const openssl = (args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1', '-keyout', key, '-out', cert]);
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', otherKey]);
  return { dir, cert, key, ca: readFileSync(cert, 'utf8'), otherKey };
}

/** The error a client gets from a TLS handshake with a server it does not trust. */
const untrusted = (error: unknown) => {
  assert.match(String((error as { code?: string }).code), /SELF_SIGNED|UNABLE_TO_VERIFY|CERT/, String(error));
  return true;
};

export function runTls(target: RuntimeTarget): void {
  const skip = target.name === 'workerd' ? "workerd has no TLS of its own (the platform's); HUBBUB_TLS_CERT is refused there" : false;
  describe(`${target.name}: TLS (--tls-cert, --tls-key)`, { skip, timeout: 90_000 }, () => {
    let tls: Certificate;
    before(() => {
      tls = makeCertificate();
    });
    after(() => rmSync(tls.dir, { recursive: true, force: true }));
    const flags = () => ['--tls-cert', tls.cert, '--tls-key', tls.key];

    it('serves https:// and wss:// with the certificate: /healthz and an echo, each with certificate checking on', async () => {
      const server = await startServer(target, flags());
      try {
        assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/, 'the listening line says https');
        assert.match(server.wsUrl, /^wss:\/\//);
        const health = await httpsGet(`${server.url}/healthz`, { ca: tls.ca });
        assert.deepEqual([health.status, JSON.parse(health.body)], [200, { status: 'ok' }]);
        const ws = await connect(server.wsUrl, { ca: tls.ca });
        assert.equal(await request(ws, 'over tls'), `${PREFIX}over tls`);
        const stats = await server.stats();
        assert.equal(stats.live, 1);
        // Node: the open socket (a TLSSocket over the TCP socket 'connection' saw) has left the pending set.
        if (!target.differences?.has('no-pending-connection-cap')) assert.equal(stats.process.pendingConnections, 0);
        ws.close();
      } finally {
        await server.stop();
      }
    });

    it('a client that does not trust the certificate fails the handshake (https and wss), and the server serves on', async () => {
      const server = await startServer(target, flags());
      try {
        await assert.rejects(httpsGet(`${server.url}/healthz`), untrusted);
        await assert.rejects(connect(server.wsUrl), untrusted);
        const ws = await connect(server.wsUrl, { ca: tls.ca });
        assert.equal(await request(ws, 'still here'), `${PREFIX}still here`);
        ws.close();
        // The server hears of a refused handshake a moment after the client gives up.
        if (!target.differences?.has('no-pending-connection-cap')) {
          const stats = await eventually(server.stats, (s) => s.process.pendingConnections === 0);
          assert.equal(stats.process.pendingConnections, 0, 'failed handshakes left nothing pending');
        }
      } finally {
        await server.stop();
      }
    });

    it('the admin listener (--admin-port) serves https with the same certificate', async () => {
      const server = await startServer(target, [...flags(), '--admin-port', '0']);
      try {
        assert.match(server.adminUrl ?? '', /^https:\/\/127\.0\.0\.1:\d+$/);
        const stats = await httpsGet(`${server.adminUrl}/stats`, { ca: tls.ca });
        assert.equal(stats.status, 200);
        assert.equal((JSON.parse(stats.body) as { runtime: string }).runtime, target.name);
        await assert.rejects(httpsGet(`${server.adminUrl}/stats`), untrusted);
      } finally {
        await server.stop();
      }
    });

    it(
      'connections that never finish their TLS handshake are pending: capped by --max-pending-connections, dropped after --headers-timeout',
      { skip: target.differences?.has('no-pending-connection-cap') ? 'the runtime gives no hook on accepted connections' : false },
      async () => {
        // Cap 2: fresh connections wait up to BURST × the cap; one more is dropped (itself, or the
        // oldest once it has waited a second: src/runtime/node/sockets.ts). A 3 s head timeout
        // keeps them all alive until then, and ends them after.
        const server = await startServer(target, [...flags(), '--max-pending-connections', '2', '--headers-timeout', '3s', '--admin-port', '0']);
        const port = Number(new URL(server.url).port);
        const silent: net.Socket[] = [];
        try {
          const closed: number[] = [];
          const open = () => {
            const socket = net.connect(port, '127.0.0.1').on('error', () => {});
            socket.once('close', () => closed.push(Date.now()));
            silent.push(socket);
          };
          const started = Date.now();
          for (let i = 0; i < 2 * BURST; i++) open();
          await eventually(server.stats, (s) => s.process.pendingConnections === 2 * BURST);
          open();
          const over = await eventually(server.stats, (s) => s.connectionsDropped['pending-limit'] === 1);
          assert.equal(over.connectionsDropped['pending-limit'], 1, 'one connection over BURST × the cap dropped');
          assert.equal(await eventually(async () => closed.length, (n) => n >= 1, 2000), 1, 'the dropped connection closed');
          assert.equal(over.process.pendingConnections, 2 * BURST, 'the others still pending');
          assert.equal(await eventually(async () => closed.length, (n) => n === silent.length, 15_000), silent.length, 'stalled handshakes dropped');
          for (const at of closed) assert.ok(at - started < 9000, `dropped after ${at - started} ms`);
          assert.equal((await eventually(server.stats, (s) => s.process.pendingConnections === 0)).process.pendingConnections, 0);
        } finally {
          for (const socket of silent) socket.destroy();
          await server.stop();
        }
      },
    );

    describe('bad TLS options are startup errors (exit 2, option and path named)', () => {
      // [name, args (given the certificate), env, what the one stderr line must say]
      const cases: [string, (c: Certificate) => string[], Record<string, string>, (c: Certificate) => RegExp][] = [
        ['a certificate without its key', (c) => ['--tls-cert', c.cert], {}, () => /--tls-key \(HUBBUB_TLS_KEY\) is missing: --tls-cert/],
        ['a key without its certificate (environment)', () => [], { HUBBUB_TLS_KEY: 'key.pem' }, () => /--tls-cert \(HUBBUB_TLS_CERT\) is missing: --tls-key/],
        ['a missing certificate file', (c) => ['--tls-cert', path.join(c.dir, 'nope.pem'), '--tls-key', c.key], {}, (c) => new RegExp(`--tls-cert "${escape(path.join(c.dir, 'nope.pem'))}": cannot read the file`)],
        ['a certificate file that is not PEM', (c) => ['--tls-cert', writeJunk(c), '--tls-key', c.key], {}, (c) => new RegExp(`--tls-cert "${escape(path.join(c.dir, 'junk.pem'))}": not a PEM certificate`)],
        ['a key that is not the certificate\'s', (c) => ['--tls-cert', c.cert, '--tls-key', c.otherKey], {}, (c) => new RegExp(`--tls-key "${escape(c.otherKey)}": not the private key of --tls-cert`)],
      ];
      for (const [name, args, env, message] of cases) {
        it(name, async () => {
          const { code, stderr, timedOut, listened } = await runToExit(target, ['--port', '0', ...args(tls)], env, 10_000);
          assert.equal(listened, false, `started listening despite the bad option (stderr: ${stderr})`);
          assert.equal(timedOut, false, stderr);
          assert.equal(code, 2, `exit code (stderr: ${stderr})`);
          const lines = stderr.trimEnd().split('\n');
          assert.equal(lines.length, 1, `one line on stderr: ${stderr}`);
          assert.ok(lines[0]!.startsWith('hubbub: '), lines[0]);
          assert.match(lines[0]!, message(tls));
        });
      }
    });
  });
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function writeJunk(c: Certificate): string {
  const file = path.join(c.dir, 'junk.pem');
  writeFileSync(file, 'not a certificate\n');
  return file;
}
