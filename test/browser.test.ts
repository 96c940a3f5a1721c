// End-to-end: the demo page at `/` (built on the hubbub client it loads from /client.js), driven in
// real headless Chromium (Debian's package, installed here when missing), against the real servers
// on Node and Deno: a room, a full server, and a restart of the node the page is on, whose missed
// messages the page fills in (two nodes on the real Redis) or says it cannot (memory history).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { connect, denoBinary, nodeServer, root, serviceSkip, startServer, type RuntimeTarget, type ServerProcess } from './helpers.ts';

const CHROMIUM = '/usr/bin/chromium';
const redisSkip = await serviceSkip('redis', 6379);
const REDIS = 'redis://127.0.0.1:6379/12'; // this file's own database

/** Installs Debian's chromium when it is missing (CI and fresh machines run as root). */
function ensureChromium(): string | undefined {
  if (existsSync(CHROMIUM)) return undefined;
  if (process.getuid?.() !== 0 || !existsSync('/usr/bin/apt-get')) return `${CHROMIUM} is missing and cannot be installed here (needs root and apt-get): apt-get install chromium`;
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', 'chromium']]) {
    const r = spawnSync('apt-get', args, { stdio: 'inherit', env, timeout: 20 * 60_000 });
    if (r.status !== 0) return `apt-get ${args.join(' ')} failed (${r.status ?? r.signal})`;
  }
  return existsSync(CHROMIUM) ? undefined : `apt-get installed chromium but ${CHROMIUM} is missing`;
}

const missing = ensureChromium();
if (missing && process.env.CI) throw new Error(missing); // in CI a missing browser is a failure
const shots = process.env.UPDATE_SCREENSHOTS ? path.join(root, 'docs') : path.join(tmpdir(), 'hubbub-screenshots');
mkdirSync(shots, { recursive: true });

const targets: RuntimeTarget[] = [
  { name: 'node', command: [process.execPath, 'dist/node.js'], testHandler: '' },
  { name: 'deno', command: [denoBinary(), 'run', '-A', 'main.ts'], testHandler: '' },
];

function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync'],
  });
}

/** What the page shows: each message's offset and text, and the notes between them. */
function listed(page: Page) {
  return page.$$eval('#messages li', (items) => items.map((li) => (li.getAttribute('data-offset') ? `${li.getAttribute('data-offset')}:${li.lastChild?.textContent}` : `note:${li.textContent}`)));
}

/** A plain pubsub client (ws, in this process) that publishes and awaits each answer. */
async function publisher(url: string) {
  const ws = await connect(url);
  let id = 0;
  const waiting = new Map<number, () => void>();
  ws.on('message', (raw) => {
    const m = JSON.parse(String(raw)) as { type: string; id?: number };
    if (m.type === 'published') waiting.get(m.id!)?.();
  });
  return {
    publish: (topic: string, text: string) =>
      new Promise<void>((resolve) => {
        waiting.set(++id, resolve);
        ws.send(JSON.stringify({ type: 'publish', topic, id, data: { text, name: 'bot' } }));
      }),
    close: () => ws.close(),
  };
}

for (const target of targets) {
  describe(`${target.name}: the demo page in Chromium`, { skip: missing, timeout: 120_000 }, () => {
    let server: ServerProcess;
    let browser: Browser;
    before(async () => {
      server = await startServer(target, ['--handler', 'pubsub', '--max-connections', '2', '--retry-after', '30']);
      browser = await launch();
    });
    after(async () => {
      await browser?.close();
      await server?.stop();
    });

    async function open(): Promise<Page> {
      const page = await browser.newPage({ viewport: { width: 820, height: 720 } });
      await page.goto(`${server.url}/`);
      return page;
    }

    async function say(page: Page, text: string) {
      await page.fill('#text', text);
      await page.click('#send');
    }

    it('two pages in one room exchange messages; counters show connections and the limit', async () => {
      const one = await open();
      const two = await open();
      for (const page of [one, two]) await page.waitForSelector('#text:not([disabled])', { timeout: 10_000 });
      await say(one, 'hello from tab one');
      await two.waitForSelector('#messages li:has-text("hello from tab one")', { timeout: 5000 });
      await say(two, 'and hello back ☃');
      await one.waitForSelector('#messages li:has-text("and hello back ☃")', { timeout: 5000 });
      await one.waitForFunction(() => document.getElementById('live')?.textContent === '2', undefined, { timeout: 5000 });
      assert.equal(await one.textContent('#limit'), '2');
      // The rate needs two polls of /stats (the page is a local client, so /stats answers it).
      await one.waitForFunction(() => /^\d+$/.test(document.getElementById('rate')?.textContent ?? ''), undefined, { timeout: 5000 });
      const rate = Number(await one.textContent('#rate'));
      assert.ok(Number.isFinite(rate));
      await one.screenshot({ path: path.join(target.name === 'node' ? shots : tmpdir(), target.name === 'node' ? 'demo.png' : `hubbub-demo-${target.name}.png`) });

      // A third page when the server is full: it says so plainly instead of failing silently.
      const three = await open();
      await three.waitForSelector('#banner.full', { timeout: 10_000 });
      const banner = (await three.textContent('#banner')) ?? '';
      assert.match(banner, /The server is full \(503\): 2 of 2 connections are in use/);
      assert.equal(await three.isDisabled('#text'), true);
      if (target.name === 'node') await three.screenshot({ path: path.join(shots, 'demo-full.png') });
      for (const page of [one, two, three]) await page.close();
    });
  });

  describe(`${target.name}: the demo page across a restart of its node`, { skip: missing || redisSkip, timeout: 120_000 }, () => {
    let browser: Browser;
    before(async () => {
      browser = await launch();
    });
    after(async () => {
      await browser?.close();
    });

    it('two nodes on Redis: the node the page is on restarts while the other publishes; the page fills in every missed message, exactly once, in order, and says so', async () => {
      const { Redis } = (await import('ioredis')) as unknown as { Redis: new (url: string) => { flushdb(): Promise<unknown>; quit(): Promise<unknown> } };
      const redis = new Redis(REDIS);
      await redis.flushdb();
      await redis.quit();
      const args = ['--handler', 'pubsub', '--backplane', REDIS, '--history-size', '1000'];
      let a = await startServer(target, args);
      const b = await startServer(nodeServer, args);
      const port = new URL(a.url).port;
      const bot = await publisher(b.wsUrl);
      const page = await browser.newPage({ viewport: { width: 820, height: 720 } });
      try {
        await page.goto(`${a.url}/?room=restart`);
        await page.waitForSelector('#state[data-state=connected]', { timeout: 10_000 });
        // The page subscribes as it connects; wait until it hears the other node before counting.
        await bot.publish('restart', 'before 1');
        await page.waitForSelector('#messages li[data-offset="1"]', { timeout: 5000 });
        for (let i = 2; i <= 3; i++) await bot.publish('restart', `before ${i}`);
        await page.waitForSelector('#messages li[data-offset="3"]', { timeout: 5000 });

        a.child.kill('SIGTERM');
        await a.exited;
        await page.waitForSelector('#state[data-state=disconnected]', { timeout: 5000 });
        for (let i = 1; i <= 5; i++) await bot.publish('restart', `while down ${i}`);
        a = await startServer(target, [...args, '--port', port]);
        await page.waitForSelector('#messages li.note:has-text("5 missed messages recovered")', { timeout: 30_000 });
        for (let i = 1; i <= 2; i++) await bot.publish('restart', `after ${i}`);
        await page.waitForSelector('#messages li[data-offset="10"]', { timeout: 5000 });
        await page.waitForFunction(() => document.getElementById('state')?.textContent === 'connected', undefined, { timeout: 5000 });
        assert.deepEqual(await listed(page), [
          '1:before 1', '2:before 2', '3:before 3',
          '4:while down 1', '5:while down 2', '6:while down 3', '7:while down 4', '8:while down 5',
          'note:reconnected: 5 missed messages recovered, in order',
          '9:after 1', '10:after 2',
        ]);
        assert.match((await page.textContent('#detail')) ?? '', /reconnects: 1/);
        if (target.name === 'node') await page.screenshot({ path: path.join(shots, 'demo-recovered.png') });
      } finally {
        await page.close();
        bot.close();
        await Promise.all([a.stop(), b.stop()]);
      }
    });

    it('one node, history in memory: after its restart the page says what was said meanwhile is gone, and the room goes on', async () => {
      let server = await startServer(target, ['--handler', 'pubsub']);
      const port = new URL(server.url).port;
      const page = await browser.newPage();
      try {
        await page.goto(`${server.url}/?room=memory`);
        await page.waitForSelector('#state[data-state=connected]', { timeout: 10_000 });
        server.child.kill('SIGTERM');
        await server.exited;
        server = await startServer(target, ['--handler', 'pubsub', '--port', port]);
        await page.waitForSelector('#messages li.note:has-text("no longer has what was said meanwhile")', { timeout: 30_000 });
        await page.fill('#text', 'still here');
        await page.click('#send');
        await page.waitForSelector('#messages li[data-offset="1"]:has-text("still here")', { timeout: 5000 });
      } finally {
        await page.close();
        await server.stop();
      }
    });
  });
}
