// A second host for tests of what a remote peer sees: a network namespace joined to this one by a
// veth pair on a private /30 (10.213.N.0). Needs root and iproute2 (CI runs as root); elsewhere
// `remoteHostUnavailable()` says why the test skips. Every host is deleted by `close()` (deleting
// the namespace deletes its end of the pair, and with it ours).
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface RemoteHost {
  /** This machine's address as the remote host reaches it. */
  readonly hostAddress: string;
  /** The remote host's own address. */
  readonly address: string;
  /** Runs a command on the remote host; resolves with its stdout. */
  exec(command: readonly string[]): Promise<string>;
  close(): Promise<void>;
}

/** Why a remote host cannot be made here, or false when it can. */
export function remoteHostUnavailable(): string | false {
  if (process.getuid?.() !== 0) return 'making a second host (a network namespace) needs root; CI runs as root';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
    return false;
  } catch {
    return 'iproute2 (ip) is not installed';
  }
}

let made = 0;

export async function createRemoteHost(): Promise<RemoteHost> {
  const n = (process.pid + made++) % 250;
  const ns = `hubbub-test-${process.pid}-${made}`;
  const ours = `hbb${process.pid % 100000}a${made}`;
  const theirs = `hbb${process.pid % 100000}b${made}`;
  const hostAddress = `10.213.${n}.1`;
  const address = `10.213.${n}.2`;
  const ip = (...args: string[]) => run('ip', args);
  await ip('netns', 'add', ns);
  try {
    await ip('link', 'add', ours, 'type', 'veth', 'peer', 'name', theirs);
    await ip('link', 'set', theirs, 'netns', ns);
    await ip('addr', 'add', `${hostAddress}/30`, 'dev', ours);
    await ip('link', 'set', ours, 'up');
    await ip('netns', 'exec', ns, 'ip', 'addr', 'add', `${address}/30`, 'dev', theirs);
    await ip('netns', 'exec', ns, 'ip', 'link', 'set', theirs, 'up');
    await ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
  } catch (error) {
    await ip('netns', 'del', ns).catch(() => {});
    await ip('link', 'del', ours).catch(() => {});
    throw error;
  }
  return {
    hostAddress,
    address,
    exec: async (command) => (await run('ip', ['netns', 'exec', ns, ...command], { timeout: 10_000 })).stdout,
    close: async () => {
      await ip('netns', 'del', ns).catch(() => {});
      await ip('link', 'del', ours).catch(() => {}); // gone with the namespace, normally
    },
  };
}
