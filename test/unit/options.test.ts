import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parseCommandLine, resolveOptions } from '../../src/options.ts';
import { VERSION } from '../../src/version.ts';
import { HubError } from '../../src/errors.ts';
import { root } from '../helpers.ts';

/**
 * The error every bad option must be: a HubError with code ERR_INVALID_OPTION (the CLI turns exactly
 * that into one stderr line and exit 2; anything else would crash startup with exit 1 and a stack).
 */
const invalidOption = (message: RegExp) => (error: unknown) => {
  assert.ok(error instanceof HubError, `a HubError, not ${String(error)}`);
  assert.equal(error.code, 'ERR_INVALID_OPTION');
  assert.match(error.message, message);
  return true;
};

describe('options', () => {
  it('defaults: port 8080, limit 100 (the seed), echo handler', () => {
    const o = resolveOptions();
    assert.equal(o.port, 8080);
    assert.equal(o.maxConnections, 100);
    assert.equal(o.handler, 'echo');
    assert.equal(o.path, '/ws');
  });

  it('reads flags in both forms, the environment, and PORT; flags win', () => {
    const cmd = parseCommandLine(['--max-connections', '5', '--handshake-timeout=2s', '--shutdown-timeout', '1m'], { PORT: '9000', HUBBUB_MAX_CONNECTIONS: '7', HUBBUB_HOST: '127.0.0.1' });
    assert.equal(cmd.kind, 'serve');
    if (cmd.kind !== 'serve') return;
    assert.deepEqual(cmd.options, { port: 9000, host: '127.0.0.1', maxConnections: 5, handshakeTimeout: 2000, shutdownTimeout: 60_000 });
  });

  it('an unknown HUBBUB_* variable is an error naming it, with the closest option; hubbub’s own non-option variables pass', () => {
    assert.throws(() => parseCommandLine([], { HUBBUB_MAX_CONECTIONS: '5' }), invalidOption(/unknown environment variable HUBBUB_MAX_CONECTIONS \(did you mean "HUBBUB_MAX_CONNECTIONS"\?\)/));
    assert.throws(() => parseCommandLine([], { HUBBUB_NOTHING_LIKE_IT: '1' }), invalidOption(/^unknown environment variable HUBBUB_NOTHING_LIKE_IT \(see --help\)$/));
    assert.equal(parseCommandLine([], { HUBBUB_CLUSTER_WORKER: '1', HUBBUB_ROOMS: 'true', HUBBUB_WORKERD_CACHE: '/tmp/x', OTHER_VAR: 'x' }).kind, 'serve');
  });

  it('HUBBUB_PORT wins over PORT', () => {
    const cmd = parseCommandLine([], { PORT: '9000', HUBBUB_PORT: '9001' });
    assert.equal(cmd.kind === 'serve' && cmd.options.port, 9001);
  });

  it('names the option and the accepted range in every error', () => {
    assert.throws(() => parseCommandLine(['--port', '70000'], {}), invalidOption(/--port must be an integer from 0 to 65535 \(got "70000"\)/));
    assert.throws(() => parseCommandLine(['--port'], {}), invalidOption(/--port needs a value/));
    assert.throws(() => parseCommandLine(['--max-connections', '1.5'], {}), invalidOption(/^--max-connections must be an integer from 1 to 10000000 \(got "1.5"\)$/));
    assert.throws(() => parseCommandLine(['--log-level', 'loud'], {}), invalidOption(/--log-level must be one of debug, info, warn, error, silent/));
    assert.throws(() => parseCommandLine(['extra'], {}), invalidOption(/unknown argument "extra"/));
    assert.throws(() => parseCommandLine([], { PORT: '-1' }), invalidOption(/environment variable PORT must be/));
  });

  it('--tls-cert and --tls-key come both or neither: one alone is an error naming the missing one', () => {
    assert.throws(() => parseCommandLine(['--tls-cert', 'cert.pem'], {}), invalidOption(/^--tls-key \(HUBBUB_TLS_KEY\) is missing: --tls-cert \(HUBBUB_TLS_CERT\) needs it/));
    assert.throws(() => parseCommandLine([], { HUBBUB_TLS_KEY: 'key.pem' }), invalidOption(/^--tls-cert \(HUBBUB_TLS_CERT\) is missing: --tls-key \(HUBBUB_TLS_KEY\) needs it/));
    assert.throws(() => resolveOptions({ tlsKey: 'key.pem' }), invalidOption(/^option tlsCert is missing: option tlsKey needs it/));
    const both = parseCommandLine(['--tls-cert', 'cert.pem'], { HUBBUB_TLS_KEY: 'key.pem' });
    assert.deepEqual(both.kind === 'serve' && both.options, { tlsCert: 'cert.pem', tlsKey: 'key.pem' });
    assert.deepEqual([resolveOptions().tlsCert, resolveOptions().tlsKey], ['', '']);
  });

  it('VERSION matches package.json', () => {
    const pkg = JSON.parse(readFileSync(`${root}/package.json`, 'utf8')) as { version: string };
    assert.equal(VERSION, pkg.version);
  });
});

describe('documentation', () => {
  it('the README flags table lists every option with its flag and environment variable', async () => {
    const { optionSpecs } = await import('../../src/options.ts');
    const readme = readFileSync(`${root}/README.md`, 'utf8');
    for (const spec of Object.values(optionSpecs)) {
      assert.ok(readme.includes(`| \`${spec.flag}\` |`), `README lists ${spec.flag}`);
      for (const env of spec.env) assert.ok(readme.includes(`\`${env}\``), `README names ${env}`);
    }
  });
});
