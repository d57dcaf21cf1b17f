// The web client's message search in a real browser (Debian's chromium,
// driven by playwright-core), against the already built debug binary:
// Ctrl+K and "/" open it, results show room, author, time and the matched
// words, and choosing one shows the message in its conversation, loading
// the history back to it. axe checks the results screen in light and dark.
//
//   cargo build && (cd e2e && npm ci && npm test)

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { ARTIFACTS, CHROMIUM, PASSWORD, SERVER_ENV, WAIT, accessible, ctx, http, startServer } from './harness.mjs';

// Results must show up within a test's patience: the index commits often.
const ENV = { ...SERVER_ENV, CONFAB_SEARCH_COMMIT_INTERVAL_MS: '50' };

describe('message search in the web client', { timeout: 300_000 }, () => {
  let server;
  let browser;
  let page;
  const errors = [];

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    ctx.dataDir = await mkdtemp(path.join(os.tmpdir(), 'confab-e2e-search-'));
    server = await startServer('127.0.0.1:0', ENV);
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
    if (ctx.dataDir) await rm(ctx.dataDir, { recursive: true, force: true });
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
