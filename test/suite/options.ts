// Suite group: bad options are startup errors (exit 2, option named); --help lists every flag.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runToExit, type RuntimeTarget } from '../helpers.ts';

export function runOptions(target: RuntimeTarget): void {
  describe(`${target.name}: bad options are startup errors (exit 2, option named)`, { timeout: 90_000 }, () => {
    // [name, args, env, the option the message must name, the rest of the message]
    const cases: [string, string[], Record<string, string>, string, RegExp][] = [
      ['negative limit', ['--max-connections', '-3'], {}, '--max-connections', /must be an integer from 1 to 10000000 \(got "-3"\)/],
      ['non-numeric port', ['--port', 'abc'], {}, '--port', /must be an integer from 0 to 65535 \(got "abc"\)/],
      ['unknown flag', ['--max-conections', '5'], {}, '"--max-conections"', /unknown flag "--max-conections"/],
      ['bad environment variable', [], { HUBBUB_MAX_CONNECTIONS: '0' }, 'HUBBUB_MAX_CONNECTIONS', /must be an integer from 1 to/],
      ['bad duration', ['--shutdown-timeout', 'soon'], {}, '--shutdown-timeout', /must be a duration/],
      ['missing handler module', ['--handler', './no/such/module.js'], {}, '--handler "./no/such/module.js"', /cannot load the module/],
      ['misspelt environment variable', [], { HUBBUB_MAX_CONECTIONS: '5' }, 'HUBBUB_MAX_CONECTIONS', /\(did you mean "HUBBUB_MAX_CONNECTIONS"\?\)/],
      ['handler with a misspelt key', ['--handler', 'test/fixtures/typo-handler.mjs'], {}, 'option handler', /unknown key "onMesage" \(did you mean "onMessage"\?\)/],
    ];
    for (const [name, args, env, option, detail] of cases) {
      it(name, async () => {
        // Startup validation is synchronous work: every runtime exits in well under a second here;
        // 10 s leaves room for a loaded machine and still fails a process that serves or hangs.
        const { code, stderr, stdout, timedOut, listened, elapsedMs } = await runToExit(target, ['--port', '0', ...args], env, 10_000);
        assert.equal(listened, false, `started listening despite the bad option (stderr: ${stderr})`);
        assert.equal(timedOut, false, `still running after ${elapsedMs} ms (stderr: ${stderr})`);
        assert.equal(code, 2, `exit code (stderr: ${stderr})`);
        // One line that names the option: no stack trace, no log record.
        const lines = stderr.trimEnd().split('\n');
        assert.equal(lines.length, 1, `one line on stderr: ${stderr}`);
        assert.ok(lines[0]!.startsWith('hubbub: ') && lines[0]!.includes(option), `names ${option}: ${lines[0]}`);
        assert.match(lines[0]!, detail);
        assert.doesNotMatch(stdout, /"listening"/, 'nothing half-started');
      });
    }

    it('--help lists every flag with its default', async () => {
      const { code, stdout, stderr, timedOut } = await runToExit(target, ['--help'], {}, 10_000);
      assert.equal(timedOut, false);
      assert.equal(code, 0, stderr);
      for (const flag of ['--port', '--host', '--max-connections', '--retry-after', '--handshake-timeout', '--shutdown-timeout', '--log-level', '--handler']) {
        assert.match(stdout, new RegExp(flag));
      }
    });
  });
}
