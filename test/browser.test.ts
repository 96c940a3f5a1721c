// End-to-end: the demo page at `/`, driven in real headless Chromium (Debian's package, installed
// here when missing), against the real servers on Node and Deno.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { denoBinary, root, startServer, type RuntimeTarget, type ServerProcess } from './helpers.ts';

const CHROMIUM = '/usr/bin/chromium';

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

for (const target of targets) {
  describe(`${target.name}: the demo page in Chromium`, { skip: missing, timeout: 120_000 }, () => {
    let server: ServerProcess;
    let browser: Browser;
    before(async () => {
      server = await startServer(target, ['--handler', 'pubsub', '--max-connections', '2', '--retry-after', '30']);
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync'],
      });
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
}
