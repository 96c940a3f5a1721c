// A second host for tests of what a remote peer sees: a network namespace joined to this one by a
// veth pair on a private /30 (10.213.N.0). Needs root and iproute2 (CI runs as root); elsewhere
// `remoteHostUnavailable()` says why the test skips. Every host is deleted by `close()` (deleting
// the namespace deletes its end of the pair, and with it ours).
//
// A host can also run a hubbub node (`target`) that reaches this machine's services (Redis) through
// forwarders (`forward`), on a second pair of addresses on the same veth (10.214.N.1 here, .2
// there): the service link. `cut()` partitions the service link only, so the test can still watch
// the node (its /healthz, its subscribers) on `address` while the node cannot reach Redis.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import { promisify } from 'node:util';
import type { RuntimeTarget } from './helpers.ts';

const run = promisify(execFile);

export interface RemoteHost {
  /** This machine's address as the remote host reaches it. */
  readonly hostAddress: string;
  /** The remote host's own address. */
  readonly address: string;
  /** Runs a command on the remote host; resolves with its stdout. */
  exec(command: readonly string[]): Promise<string>;
  /** `target` as it runs on the remote host, listening on `address` (for startServer). */
  target(target: RuntimeTarget): RuntimeTarget;
  /**
   * Makes this machine's 127.0.0.1:`port` reachable from the remote host over the service link (a
   * socat forwarder, stopped by close()); resolves with the host:port to use there.
   */
  forward(port: number): Promise<string>;
  /**
   * Partitions the service link: every packet either way is dropped, without a reset or an ICMP
   * error, so established connections hang silently (TCP retransmits into the void) and a new
   * connection's SYN goes unanswered. Connections survive it: after `heal()` TCP delivers what was
   * retransmitted, unless `forget()` ended them meanwhile.
   */
  cut(): Promise<void>;
  heal(): Promise<void>;
  /**
   * While cut: this machine's end of every forwarded connection is reset (the forwarder, and with it
   * Redis, lets them go), and the resets are lost in the partition. That is where a long partition
   * ends (Redis drops a peer that stopped answering: its tcp-keepalive, a subscriber's output-buffer
   * limit), compressed into a test: the remote host learns only when it sends on such a connection.
   */
  forget(): Promise<void>;
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

/**
 * Why a remote host cannot reach this machine's services here (`forward`, `cut`), or false when it
 * can: a remote host, socat (installed with apt-get when missing and possible) and ss (iproute2).
 */
export function forwardingUnavailable(): string | false {
  const host = remoteHostUnavailable();
  if (host) return host;
  const has = (command: string, ...args: string[]) => {
    try {
      execFileSync(command, args, { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  };
  if (!has('socat', '-V')) {
    try {
      execFileSync('apt-get', ['install', '-y', '-qq', 'socat'], { stdio: 'ignore', timeout: 120_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    } catch {
      // reported below
    }
    if (!has('socat', '-V')) return 'socat is not installed (apt-get install socat) and could not be installed: the remote host reaches Redis through it';
  }
  if (!has('ss', '-V')) return 'ss (iproute2) is not installed';
  return false;
}

let made = 0;
/** Forwarders not yet stopped, killed if the test process exits without close(). */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const socat of running) socat.kill('SIGKILL');
});

export async function createRemoteHost(): Promise<RemoteHost> {
  const n = (process.pid + made++) % 250;
  const ns = `hubbub-test-${process.pid}-${made}`;
  const ours = `hbb${process.pid % 100000}a${made}`;
  const theirs = `hbb${process.pid % 100000}b${made}`;
  const hostAddress = `10.213.${n}.1`;
  const address = `10.213.${n}.2`;
  // The service link: its own addresses, so that routes can cut it and leave the test's own path.
  const serviceHost = `10.214.${n}.1`;
  const serviceRemote = `10.214.${n}.2`;
  const ip = (...args: string[]) => run('ip', args);
  const inside = (...args: string[]) => ip('netns', 'exec', ns, ...args);
  await ip('netns', 'add', ns);
  try {
    await ip('link', 'add', ours, 'type', 'veth', 'peer', 'name', theirs);
    await ip('link', 'set', theirs, 'netns', ns);
    await ip('addr', 'add', `${hostAddress}/30`, 'dev', ours);
    await ip('link', 'set', ours, 'up');
    await inside('ip', 'addr', 'add', `${address}/30`, 'dev', theirs);
    await inside('ip', 'link', 'set', theirs, 'up');
    await inside('ip', 'link', 'set', 'lo', 'up');
  } catch (error) {
    await ip('netns', 'del', ns).catch(() => {});
    await ip('link', 'del', ours).catch(() => {});
    throw error;
  }

  let serviceLink: Promise<void> | undefined;
  /** The service link, made on first use (the tests that only need a peer never pay for it). */
  const serviceLinkUp = () =>
    (serviceLink ??= (async () => {
      await ip('addr', 'add', `${serviceHost}/32`, 'dev', ours);
      await ip('route', 'add', `${serviceRemote}/32`, 'dev', ours, 'src', serviceHost);
      await inside('ip', 'addr', 'add', `${serviceRemote}/32`, 'dev', theirs);
      await inside('ip', 'route', 'add', `${serviceHost}/32`, 'dev', theirs, 'src', serviceRemote);
      // With strict reverse-path filtering on our end, a packet from the remote's service address
      // is dropped once the route back to it is a blackhole: cut() then drops both ways, on this side.
      await writeFile(`/proc/sys/net/ipv4/conf/${ours}/rp_filter`, '1');
    })());

  const forwarders: ChildProcess[] = [];
  const ports: number[] = [];
  return {
    hostAddress,
    address,
    exec: async (command) => (await run('ip', ['netns', 'exec', ns, ...command], { timeout: 10_000 })).stdout,
    target: (target) => ({ ...target, name: `${target.name} in ${ns}`, command: ['ip', 'netns', 'exec', ns, ...target.command], host: address }),
    forward: async (port) => {
      await serviceLinkUp();
      const listen = await freePort(serviceHost);
      const socat = spawn('socat', [`TCP-LISTEN:${listen},bind=${serviceHost},fork,reuseaddr`, `TCP:127.0.0.1:${port}`], { stdio: 'ignore' });
      forwarders.push(socat);
      running.add(socat);
      ports.push(listen);
      await listening(serviceHost, listen, socat);
      return `${serviceHost}:${listen}`;
    },
    // Only our side changes: our packets to the remote hit the blackhole, and its packets to us fail
    // the reverse-path check. The remote host's routes stay, so its SYNs leave and go unanswered.
    cut: async () => {
      await serviceLinkUp();
      await ip('route', 'replace', 'blackhole', `${serviceRemote}/32`);
    },
    heal: async () => {
      await ip('route', 'replace', `${serviceRemote}/32`, 'dev', ours, 'src', serviceHost);
    },
    // ss -K aborts our sockets (a RST, dropped by the blackhole); each socat child then exits and closes its Redis connection.
    forget: async () => {
      for (const port of ports) await run('ss', ['-tnK', 'src', `${serviceHost}:${port}`]);
    },
    close: async () => {
      // Aborting the forwarded connections ends socat's children; then the listener goes.
      for (const port of ports) await run('ss', ['-tnK', 'src', `${serviceHost}:${port}`]).catch(() => {});
      for (const socat of forwarders) {
        socat.kill('SIGKILL');
        running.delete(socat);
      }
      await ip('netns', 'del', ns).catch(() => {});
      await ip('link', 'del', ours).catch(() => {}); // gone with the namespace, normally
      await ip('route', 'del', `${serviceRemote}/32`).catch(() => {}); // the blackhole of a host closed while cut
    },
  };
}

/** A TCP port free on `address` now (socat is then told to listen on it). */
function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, address, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once `address:port` accepts connections (socat is up), rejects if socat exits first. */
async function listening(address: string, port: number, socat: ChildProcess): Promise<void> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    if (socat.exitCode !== null || socat.signalCode !== null) throw new Error(`socat exited (${socat.exitCode ?? socat.signalCode}) before listening on ${address}:${port}`);
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, address);
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (up) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`socat did not listen on ${address}:${port} within 5 s`);
}
