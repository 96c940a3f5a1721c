// Suite group: bad options are startup errors (exit 2, option named); --help lists every flag.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runToExit, type RuntimeTarget } from '../helpers.ts';

export function runOptions(target: RuntimeTarget): void {
  describe(`${target.name}: bad options are startup errors (exit 2, option named)`, { timeout: 90_000 }, () => {
    const cases: [string, string[], Record<string, string>, RegExp][] = [
      ['negative limit', ['--max-connections', '-3'], {}, /--max-connections must be an integer from 1 to/],
      ['non-numeric port', ['--port', 'abc'], {}, /--port must be an integer from 0 to 65535 \(got "abc"\)/],
      ['unknown flag', ['--max-conections', '5'], {}, /unknown flag "--max-conections"/],
      ['bad environment variable', [], { HUBBUB_MAX_CONNECTIONS: '0' }, /HUBBUB_MAX_CONNECTIONS must be an integer from 1 to/],
      ['bad duration', ['--shutdown-timeout', 'soon'], {}, /--shutdown-timeout must be a duration/],
      ['missing handler module', ['--handler', './no/such/module.js'], {}, /--handler "\.\/no\/such\/module\.js": cannot load/],
      ['misspelt environment variable', [], { HUBBUB_MAX_CONECTIONS: '5' }, /unknown environment variable HUBBUB_MAX_CONECTIONS \(did you mean "HUBBUB_MAX_CONNECTIONS"\?\)/],
      ['handler with a misspelt key', ['--handler', 'test/fixtures/typo-handler.mjs'], {}, /option handler: unknown key "onMesage" \(did you mean "onMessage"\?\)/],
    ];
    for (const [name, args, env, pattern] of cases) {
      it(name, async () => {
        const { code, stderr, stdout } = await runToExit(target, ['--port', '0', ...args], env);
        assert.equal(code, 2, `exit code (stderr: ${stderr})`);
        assert.match(stderr, pattern);
        assert.doesNotMatch(stdout, /"listening"/, 'nothing half-started');
      });
    }

    it('--help lists every flag with its default', async () => {
      const { code, stdout } = await runToExit(target, ['--help']);
      assert.equal(code, 0);
      for (const flag of ['--port', '--host', '--max-connections', '--retry-after', '--handshake-timeout', '--shutdown-timeout', '--log-level', '--handler']) {
        assert.match(stdout, new RegExp(flag));
      }
    });
  });
}
