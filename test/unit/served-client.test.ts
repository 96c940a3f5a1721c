// The client the server answers at /client.js (src/client/served.ts) is the one in
// src/client/index.ts: generated from it, and it behaves the same (evaluated as the browser would).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import * as typed from '../../src/client/index.ts';
import { clientModule } from '../../src/client/served.ts';
import { root } from '../helpers.ts';

describe('the served client (/client.js)', () => {
  it('src/client/served.ts is up to date with src/client/index.ts (else: npm run embed:client)', () => {
    const r = spawnSync(process.execPath, ['scripts/embed-client.mjs', '--check'], { cwd: root, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });

  it('is one ES module with no imports that exports what hubbub/client exports, and behaves the same', async () => {
    assert.doesNotMatch(clientModule, /^\s*import\s/m, 'a browser loads it alone');
    const served = (await import(`data:text/javascript;base64,${Buffer.from(clientModule).toString('base64')}`)) as typeof typed;
    assert.deepEqual(Object.keys(served).sort(), Object.keys(typed).sort());
    for (const code of [1000, 1001, 1006, 1008, 1011, 1012, 3000, 4000, 4403]) assert.equal(served.reconnects(code), typed.reconnects(code), `close ${code}`);
    const fixed = () => 0.5;
    for (let attempt = 0; attempt < 8; attempt++) assert.equal(served.backoffDelay(attempt, 500, 20_000, fixed), typed.backoffDelay(attempt, 500, 20_000, fixed));
    assert.equal(served.admissionUrlOf('wss://example.com:8443/ws?token=x'), typed.admissionUrlOf('wss://example.com:8443/ws?token=x'));
  });
});
