// The OpenAPI description that ships with hubbub (src/api/openapi.ts, served at /api/openapi.json)
// lists exactly the routes the server API serves, method by method.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { openApiDocument } from '../../src/api/openapi.ts';
import { createApp, type RuntimeAdapter } from '../../src/app.ts';
import { createHub } from '../../src/hub.ts';

describe('the OpenAPI description of the server API', () => {
  it('names every /api route the app serves, and no other', async () => {
    const hub = createHub({ handler: 'pubsub', apiKeys: ['unit-test-api-key-0123'], logLevel: 'silent' }, undefined, { sweeper: 'manual' });
    const adapter: RuntimeAdapter = { runtime: 'unit', upgradeWebSocket: () => new Response(null, { status: 500 }), remoteAddress: () => '127.0.0.1' } as unknown as RuntimeAdapter;
    const app = createApp(hub, adapter);
    const served = new Set(app.routes.filter((r) => r.path.startsWith('/api/') && r.path !== '/api/*' && r.method !== 'ALL').map((r) => `${r.method} ${r.path}`));
    const described = new Set(Object.entries(openApiDocument.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`)));
    assert.deepEqual([...served].sort(), [...described].sort());
    // Every route answers 401 without a key, as the document says.
    for (const route of described) {
      const [method, path] = route.split(' ');
      assert.equal((await app.request(path!, { method: method! })).status, 401, route);
    }
    await hub.shutdown(100);
  });
});
