// The web client's message search in a real browser (Debian's chromium,
// driven by playwright-core), against the already built debug binary:
// Ctrl+K and "/" open it, results show room, author, time and the matched
// words, and choosing one shows the message in its conversation, loading
// the history back to it. axe checks the results screen in light and dark.
//
//   cargo build && (cd e2e && npm ci && npm test)

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import AxeBuilder from '@axe-core/playwright';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const TARGET = process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target');
const BIN = process.env.CONFAB_BIN || path.join(TARGET, 'debug', 'confab');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.join(HERE, 'artifacts');
const WAIT = 15_000;
const PASSWORD = 'correct horse battery';

const SERVER_ENV = {
  ...process.env,
  CONFAB_AUTH_ARGON2_MEMORY_KIB: '64',
  CONFAB_AUTH_ARGON2_ITERATIONS: '1',
  CONFAB_LIMITS_MESSAGES_PER_SEC: '10000',
  CONFAB_LIMITS_MESSAGES_BURST: '10000',
  CONFAB_SEARCH_COMMIT_INTERVAL_MS: '50',
  RUST_LOG: process.env.RUST_LOG || 'warn',
};

function startServer(dataDir) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['serve', '--bind', '127.0.0.1:0', '--data-dir', dataDir], {
      env: SERVER_ENV,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`confab did not start within ${WAIT} ms: ${err}`));
    }, WAIT);
    child.stdout.on('data', (b) => {
      out += b;
      const m = out.match(/confab listening on (http:\/\/[^\s]+)/);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1] });
      }
    });
    child.stderr.on('data', (b) => { err = (err + b).slice(-4000); });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`confab exited (${code ?? signal}): ${err}`));
    });
  });
}

async function http(base, method, urlPath, token, body) {
  const resp = await fetch(new URL(urlPath, base), {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await resp.json().catch(() => null);
  assert.ok(resp.ok, `${method} ${urlPath}: ${resp.status} ${JSON.stringify(json)}`);
  return json;
}

/** axe on what the page shows now, light and dark: no serious or critical violation. */
async function accessible(page, screen) {
  const problems = [];
  for (const colorScheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme });
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    await page.evaluate(() => Promise.all(document.getAnimations().map((a) => a.finished.catch(() => {}))));
    const { violations } = await new AxeBuilder({ page }).analyze();
    for (const v of violations) {
      if (v.impact !== 'serious' && v.impact !== 'critical') continue;
      const where = v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary.replace(/\s+/g, ' ')}`);
      problems.push(`${screen} (${colorScheme}): ${v.id} [${v.impact}] ${v.help}\n    ${where.join('\n    ')}`);
    }
  }
  await page.emulateMedia({ colorScheme: 'light' });
  assert.deepEqual(problems, [], problems.join('\n'));
}

describe('message search in the web client', { timeout: 300_000 }, () => {
  let server;
  let dataDir;
  let browser;
  let page;
  const errors = [];

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'confab-e2e-search-'));
    server = await startServer(dataDir);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
    });
    page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    page.on('pageerror', (e) => errors.push(String(e)));
  });

  after(async () => {
    if (page) await page.screenshot({ path: path.join(ARTIFACTS, 'search-final.png') }).catch(() => {});
    await browser?.close().catch(() => {});
    if (server) server.child.kill('SIGTERM');
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('finds a message far back in history and shows it in its conversation', async () => {
    const base = server.url;
    const { token } = await http(base, 'POST', '/api/auth/register', null, { username: 'seeker', password: PASSWORD });
    const { room } = await http(base, 'POST', '/api/rooms', token, { name: 'archive' });
    const post = (text) => http(base, 'POST', `/api/rooms/${room.id}/messages`, token, { text });
    await post('The needle sits in this haystack, <b>not bold</b>');
    // Far more than one page of history after it.
    for (let i = 0; i < 120; i++) await post(`filler line ${i}`);
    await post('Café crème for everyone');
    // The index catches up within its commit interval.
    for (let i = 0; ; i++) {
      const r = await http(base, 'GET', '/api/search?q=needle', token);
      if (r.results.length === 1) break;
      assert.ok(i < 100, 'the message is indexed');
      await new Promise((res) => setTimeout(res, 100));
    }

    await page.goto(base);
    await page.locator('#login-username').fill('seeker');
    await page.locator('#login-password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForFunction(() => document.getElementById('conn')?.dataset.state === 'connected', null, { timeout: WAIT });
    await page.locator('#room-list button.conv', { hasText: 'archive' }).click();
    await page.locator('#messages > li', { hasText: 'Café crème' }).waitFor({ timeout: WAIT });
    assert.equal(await page.locator('#messages > li', { hasText: 'needle' }).count(), 0, 'not loaded yet');

    // "/" opens search from the timeline; Escape closes it.
    await page.locator('#timeline').focus();
    await page.keyboard.press('/');
    await page.locator('#search-dialog[open]').waitFor({ timeout: WAIT });
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'search-input');
    await page.keyboard.press('Escape');
    await page.locator('#search-dialog:not([open])').waitFor({ state: 'attached', timeout: WAIT });

    // Ctrl+K from the composer too.
    await page.locator('#input').focus();
    await page.keyboard.press('Control+k');
    await page.locator('#search-dialog[open]').waitFor({ timeout: WAIT });
    await page.keyboard.type('NEEDLE hay*');
    await page.keyboard.press('Enter');
    const hit = page.locator('#search-results .search-hit');
    await hit.first().waitFor({ timeout: WAIT });
    assert.equal(await hit.count(), 1);
    assert.deepEqual(await hit.locator('mark').allTextContents(), ['needle', 'haystack']);
    assert.match(await hit.locator('.search-meta').textContent(), /#archive · seeker · /);
    // Text from the message stays text.
    assert.match(await hit.locator('.search-snippet').textContent(), /<b>not bold<\/b>/);
    assert.equal(await hit.locator('b').count(), 0);
    assert.match(await page.locator('#search-state').textContent(), /1 message/);
    await page.screenshot({ path: path.join(ARTIFACTS, 'search-results.png') });
    await accessible(page, 'search results');

    // Accents and case fold.
    await page.locator('#search-input').fill('CAFE');
    await page.keyboard.press('Enter');
    await page.locator('#search-results .search-hit', { hasText: 'crème' }).waitFor({ timeout: WAIT });

    await page.locator('#search-input').fill('needle');
    await page.keyboard.press('Enter');
    await page.locator('#search-results .search-hit', { hasText: 'needle' }).waitFor({ timeout: WAIT });
    // The keyboard reaches the result and opens it.
    await page.locator('#search-results .search-hit').first().focus();
    await page.keyboard.press('Enter');
    const target = page.locator('#messages > li.hit', { hasText: 'needle' });
    await target.waitFor({ timeout: WAIT });
    assert.equal(await page.locator('#search-dialog[open]').count(), 0);
    assert.ok(await target.evaluate((el) => el === document.activeElement), 'the message has the focus');
    assert.ok(await target.isVisible());
    await page.screenshot({ path: path.join(ARTIFACTS, 'search-jump.png') });
    await accessible(page, 'message found');
    assert.deepEqual(errors, []);
  });
});
