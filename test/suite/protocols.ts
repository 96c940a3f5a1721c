// Suite group: subprotocols: the server answers only one the handler chose, never simply the first offered.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { connect, eventually, hostOf, rawRequest, startServer, type RuntimeTarget } from '../helpers.ts';
import { upgradeHeaders } from '../frames.ts';

export function runProtocols(target: RuntimeTarget): void {
  describe(`${target.name}: subprotocols`, { timeout: 60_000 }, () => {
    it('without a selectProtocol hook, an offer of "mqtt, graphql-ws" is answered with no subprotocol', async () => {
      const server = await startServer(target);
      try {
        const raw = await rawRequest(server.url, upgradeHeaders(hostOf(server.url), { 'Sec-WebSocket-Protocol': 'mqtt, graphql-ws' }));
        assert.equal(raw.status, 101);
        assert.equal(raw.headers['sec-websocket-protocol'], undefined, 'no protocol the handler did not agree to');
        raw.socket.destroy();
      } finally {
        await server.stop();
      }
    });

    it("the handler's choice is answered; a choice the client did not offer is answered as none, and logged", async () => {
      const server = await startServer(target, ['--handler', target.testHandler]);
      try {
        const chosen = await rawRequest(server.url, upgradeHeaders(hostOf(server.url), { 'Sec-WebSocket-Protocol': 'x-other, hubbub-test' }));
        assert.equal(chosen.status, 101);
        assert.equal(chosen.headers['sec-websocket-protocol'], 'hubbub-test');
        chosen.socket.destroy();
        const unoffered = await rawRequest(server.url, upgradeHeaders(hostOf(server.url), { 'Sec-WebSocket-Protocol': 'choose-unoffered' }));
        assert.equal(unoffered.status, 101);
        assert.equal(unoffered.headers['sec-websocket-protocol'], undefined);
        unoffered.socket.destroy();
        await eventually(async () => server.lines, (lines) => lines.some((l) => l.includes('"selectProtocol"')), 5000);
      } finally {
        await server.stop();
      }
    });
  });
}
