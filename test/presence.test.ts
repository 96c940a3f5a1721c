// Presence across nodes, black-box: real hubbub nodes sharing the real Redis (127.0.0.1:6379,
// database 6). Who is subscribed is answered the same on every node; joins and leaves reach the
// subscribers of the other nodes; the members of a node killed with SIGKILL leave presence within
// the documented 10 s, and those of a node that shuts down at once; a Redis that lost its data is
// written again by every live node. In CI (CI=true) a missing Redis fails; elsewhere these skip.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type WebSocket from 'ws';
import { connect, eventually, inbox, nodeServer, serviceSkip, sleep, startServer, type ServerProcess } from './helpers.ts';

const skip = await serviceSkip('redis', 6379);
const DB = 6;
/** The documented time within which a killed node's members leave presence (RedisBackplane presenceTtl). */
const PRESENCE_TTL_MS = 10_000;

interface Answer {
  type: string;
  topic?: string;
  id?: string;
  count?: number;
  members?: { id: string; principal?: string }[];
  from?: string;
  code?: string;
}

/** A pubsub client subscribed to `topic`: its connection id (learnt from its own publish) and every answer it got. */
async function member(server: ServerProcess, topic: string) {
  const ws = await connect(server.wsUrl);
  const heard: Answer[] = [];
  const waiting: { match: (a: Answer) => boolean; resolve: (a: Answer) => void }[] = [];
  ws.on('message', (data: Buffer) => {
    const a = JSON.parse(data.toString()) as Answer;
    heard.push(a);
    for (const w of waiting.splice(0)) {
      if (w.match(a)) w.resolve(a);
      else waiting.push(w);
    }
  });
  const next = (match: (a: Answer) => boolean, timeoutMs = 10_000): Promise<Answer> => {
    const had = heard.find(match);
    if (had) return Promise.resolve(had);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting; heard ${JSON.stringify(heard.slice(-5))}`)), timeoutMs);
      waiting.push({ match, resolve: (a) => (clearTimeout(timer), resolve(a)) });
    });
  };
  ws.send(JSON.stringify({ type: 'subscribe', topic }));
  await next((a) => a.type === 'subscribed');
  const tag = `whoami-${Math.random()}`;
  ws.send(JSON.stringify({ type: 'publish', topic, data: tag }));
  const own = await next((a) => a.type === 'message' && (a as { data?: unknown }).data === tag);
  return { ws, id: own.from!, heard, next };
}

/** Asks `server` (through a client of its own) who is subscribed to `topic`. */
async function presence(server: ServerProcess, topic: string): Promise<Answer> {
  const ws = await connect(server.wsUrl);
  const box = inbox(ws);
  ws.send(JSON.stringify({ type: 'presence', topic }));
  const answer = JSON.parse(await box.next(10_000)) as Answer;
  ws.close();
  return answer;
}

const idsOf = (a: Answer) => (a.members ?? []).map((m) => m.id).sort();

async function startNodes(count: number, extra: string[] = []): Promise<ServerProcess[]> {
  const url = `redis://127.0.0.1:6379/${DB}`;
  const nodes = await Promise.all(Array.from({ length: count }, () => startServer(nodeServer, ['--handler', 'pubsub', '--backplane', url, '--presence-events', 'true', ...extra])));
  for (const n of nodes) await eventually(async () => (await (await fetch(`${n.url}/healthz`)).json()) as { backplane?: string }, (h) => h.backplane === 'connected', 10_000);
  return nodes;
}

async function redis() {
  const { Redis } = (await import('ioredis')) as unknown as { Redis: new (url: string) => { flushdb(): Promise<unknown>; quit(): Promise<unknown> } };
  return new Redis(`redis://127.0.0.1:6379/${DB}`);
}

describe('presence across nodes (Redis)', { skip, timeout: 120_000 }, () => {
  let nodes: ServerProcess[];
  const open: WebSocket[] = [];
  before(async () => {
    const client = await redis();
    await client.flushdb();
    await client.quit();
    nodes = await startNodes(3);
  });
  after(async () => {
    for (const ws of open) ws.terminate();
    for (const n of nodes ?? []) await n.stop();
  });

  it('every node answers the same members: those of every node', async () => {
    const topic = `room-${Date.now()}`;
    const members = [await member(nodes[0]!, topic), await member(nodes[0]!, topic), await member(nodes[1]!, topic), await member(nodes[2]!, topic)];
    open.push(...members.map((m) => m.ws));
    const ids = members.map((m) => m.id).sort();
    assert.equal(new Set(ids).size, 4, 'ids are unique across nodes');
    for (const n of nodes) {
      const answer = await presence(n, topic);
      assert.equal(answer.type, 'presence', JSON.stringify(answer));
      assert.equal(answer.count, 4);
      assert.deepEqual(idsOf(answer), ids, 'the same members on every node');
    }
    // One leaves by unsubscribing, one by closing: both are gone everywhere.
    members[2]!.ws.send(JSON.stringify({ type: 'unsubscribe', topic }));
    members[3]!.ws.close();
    const left = await eventually(() => presence(nodes[0]!, topic), (a) => a.count === 2, 5000);
    assert.deepEqual(idsOf(left), [members[0]!.id, members[1]!.id].sort());
    assert.deepEqual(idsOf(await presence(nodes[2]!, topic)), idsOf(left));
  });

  it('joins and leaves reach the subscribers of the other nodes, once each', async () => {
    const topic = `events-${Date.now()}`;
    const watcher = await member(nodes[0]!, topic);
    open.push(watcher.ws);
    const other = await member(nodes[1]!, topic);
    const join = await watcher.next((a) => a.type === 'join' && a.id === other.id);
    assert.equal(join.topic, topic);
    other.ws.close();
    await watcher.next((a) => a.type === 'leave' && a.id === other.id);
    await sleep(300); // a duplicate would have arrived by now
    assert.equal(watcher.heard.filter((a) => a.type === 'join' && a.id === other.id).length, 1);
    assert.equal(watcher.heard.filter((a) => a.type === 'leave' && a.id === other.id).length, 1);
    assert.equal(other.heard.filter((a) => a.type === 'join' && a.id === other.id).length, 0, 'nobody hears their own join');
  });

  it('a Redis that lost its data (FLUSHDB) is written again by every live node', async () => {
    const topic = `flushed-${Date.now()}`;
    const members = [await member(nodes[0]!, topic), await member(nodes[1]!, topic)];
    open.push(...members.map((m) => m.ws));
    assert.equal((await presence(nodes[2]!, topic)).count, 2);
    const client = await redis();
    await client.flushdb();
    await client.quit();
    // Each node sees on its next renewal (every second) that its session is gone, and rejoins.
    const back = await eventually(() => presence(nodes[2]!, topic), (a) => a.count === 2, 5000);
    assert.deepEqual(idsOf(back), members.map((m) => m.id).sort());
  });
});

describe('presence across nodes (Redis): a node that dies', { skip, timeout: 120_000 }, () => {
  let nodes: ServerProcess[];
  const open: WebSocket[] = [];
  before(async () => {
    nodes = await startNodes(3);
  });
  after(async () => {
    for (const ws of open) ws.terminate();
    for (const n of nodes ?? []) await n.stop();
  });

  it(`the members of a node killed with SIGKILL leave presence within ${PRESENCE_TTL_MS / 1000} s; those of a node shut down, at once`, async () => {
    const topic = `dies-${Date.now()}`;
    const survivors = [await member(nodes[0]!, topic)];
    const killed = [await member(nodes[1]!, topic), await member(nodes[1]!, topic), await member(nodes[1]!, topic)];
    const stopped = [await member(nodes[2]!, topic), await member(nodes[2]!, topic)];
    open.push(...[...survivors, ...killed, ...stopped].map((m) => m.ws));
    assert.equal((await presence(nodes[0]!, topic)).count, 6);

    const killedAt = Date.now();
    nodes[1]!.child.kill('SIGKILL');
    await nodes[1]!.exited;
    const after = await eventually(() => presence(nodes[0]!, topic), (a) => a.count === 3, PRESENCE_TTL_MS + 3000);
    const took = Date.now() - killedAt;
    assert.equal(after.count, 3, `the killed node's members still listed after ${took} ms`);
    assert.ok(took <= PRESENCE_TTL_MS + 2000, `left within the documented time (+ one renewal and a read): ${took} ms`);
    assert.deepEqual(idsOf(after), [...survivors, ...stopped].map((m) => m.id).sort());

    // A graceful shutdown ends the node's session itself: nothing waits for the TTL.
    const stoppedAt = Date.now();
    nodes[2]!.child.kill('SIGTERM');
    assert.equal((await nodes[2]!.exited).code, 0);
    const last = await eventually(() => presence(nodes[0]!, topic), (a) => a.count === 1, 3000);
    assert.equal(last.count, 1, 'the stopped node took its members out at once');
    assert.ok(Date.now() - stoppedAt < 3000);
    assert.deepEqual(idsOf(last), [survivors[0]!.id]);
  });
});
