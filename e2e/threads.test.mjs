// Replies and threads in the web client, in a real browser (Debian's
// chromium, driven by playwright-core), against the already built debug
// binary: a root shows its reply count and how many are new, R on a
// focused message opens its thread, a reply stays in the thread unless
// "Also send to the room" is ticked, replies by others arrive live, and
// reading the thread clears its new count. axe checks the open thread.
//
//   cargo build && (cd e2e && npm ci && npm test)

import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { ARTIFACTS, CHROMIUM, PASSWORD, WAIT, accessible, ctx, http, startServer, step } from './harness.mjs';

describe('replies and threads in the web client', { timeout: 300_000 }, () => {
  let server;
  let browser;
  let page;
  let base;
  let alice;
  let bob;
  let room;
  let root;
  const errors = [];

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    ctx.dataDir = await mkdtemp(path.join(os.tmpdir(), 'confab-e2e-threads-'));
    server = await startServer('127.0.0.1:0');
    base = server.url;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
    });
    page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    page.on('pageerror', (e) => errors.push(`${e}\n${e.stack}`));
  });

  after(async () => {
    if (page) await page.screenshot({ path: path.join(ARTIFACTS, 'threads-final.png') }).catch(() => {});
    await browser?.close().catch(() => {});
    if (server) server.child.kill('SIGTERM');
    if (ctx.dataDir) await rm(ctx.dataDir, { recursive: true, force: true });
  });

  const timeline = (text) => page.locator('#messages > li', { hasText: text });
  const replies = (text) => page.locator('#thread-replies > li', { hasText: text });

  step('shows a root with its reply count, new replies marked, and no thread-only reply', async () => {
    ({ token: alice } = await http(base, 'POST', '/api/auth/register', null, { username: 'alice', password: PASSWORD }));
    ({ token: bob } = await http(base, 'POST', '/api/auth/register', null, { username: 'bob', password: PASSWORD }));
    ({ room } = await http(base, 'POST', '/api/rooms', alice, { name: 'lounge' }));
    await http(base, 'POST', `/api/rooms/${room.id}/members`, alice, { username: 'bob' });
    ({ message: root } = await http(base, 'POST', `/api/rooms/${room.id}/messages`, alice, { text: 'Where shall we eat?' }));
    await http(base, 'POST', `/api/rooms/${room.id}/messages`, bob, { text: 'Pizza, obviously', reply_to: root.id });
    await http(base, 'POST', `/api/rooms/${room.id}/messages`, alice, { text: 'Back in the room' });

    await page.goto(base);
    await page.locator('#login-username').fill('alice');
    await page.locator('#login-password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForFunction(() => document.getElementById('conn')?.dataset.state === 'connected', null, { timeout: WAIT });
    await page.locator('#room-list button.conv', { hasText: 'lounge' }).click();
    await timeline('Back in the room').waitFor({ timeout: WAIT });
    const link = timeline('Where shall we eat?').locator('.thread-link');
    await link.filter({ hasText: '1 reply · 1 new' }).waitFor({ timeout: WAIT });
    assert.equal(await timeline('Pizza').count(), 0, 'a thread-only reply stays out of the room');
  });

  step('opens the thread from the keyboard and replies in it only', async () => {
    await timeline('Where shall we eat?').press('t');
    await page.locator('#thread-dialog[open]').waitFor({ timeout: WAIT });
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'thread-input');
    await page.locator('#thread-root', { hasText: 'Where shall we eat?' }).waitFor({ timeout: WAIT });
    await replies('Pizza, obviously').waitFor({ timeout: WAIT });
    // Reading it clears the new count on the root.
    await timeline('Where shall we eat?').locator('.thread-link:not(.has-new)', { hasText: '1 reply' }).waitFor({ timeout: WAIT });
    await accessible(page, 'an open thread');

    await page.keyboard.type('Sushi instead?');
    await page.keyboard.press('Enter');
    await replies('Sushi instead?').waitFor({ timeout: WAIT });
    assert.equal(await page.locator('#thread-input').inputValue(), '');
    await timeline('Where shall we eat?').locator('.thread-link', { hasText: '2 replies' }).waitFor({ timeout: WAIT });
    assert.equal(await timeline('Sushi instead?').count(), 0);
    const { messages } = await http(base, 'GET', `/api/rooms/${room.id}/messages`, alice);
    assert.ok(!messages.some((m) => m.text === 'Sushi instead?'), 'not in room history');
  });

  step('also sends a reply to the room when asked, and shows replies by others live', async () => {
    await page.locator('#thread-input').fill('Tacos, then.');
    await page.locator('#thread-also').check();
    await page.locator('#thread-form button[type=submit]').click();
    await replies('Tacos, then.').waitFor({ timeout: WAIT });
    await timeline('Tacos, then.').locator('.thread-link', { hasText: 'replied in a thread' }).waitFor({ timeout: WAIT });
    assert.equal(await page.locator('#thread-also').isChecked(), false, 'the box is cleared after sending');

    await http(base, 'POST', `/api/rooms/${room.id}/messages`, bob, { text: 'Fine by me', reply_to: root.id });
    await replies('Fine by me').waitFor({ timeout: WAIT });
    // Read while open: nothing left unread for alice.
    for (let i = 0; ; i++) {
      const { threads } = await http(base, 'GET', '/api/me/threads', alice);
      if (threads.length === 1 && threads[0].unread === 0) break;
      assert.ok(i < 100, `the open thread is marked read: ${JSON.stringify(threads)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  step('stops following, and Escape goes back to the room', async () => {
    const follow = page.locator('#thread-follow');
    assert.equal(await follow.getAttribute('aria-pressed'), 'true');
    await follow.click();
    await page.locator('#thread-follow[aria-pressed=false]').waitFor({ timeout: WAIT });
    const { threads } = await http(base, 'GET', '/api/me/threads', alice);
    assert.deepEqual(threads, []);
    await page.keyboard.press('Escape');
    await page.locator('#thread-dialog:not([open])').waitFor({ state: 'attached', timeout: WAIT });
    // Opened again from the reply line, with the mouse.
    await timeline('Where shall we eat?').locator('.thread-link').click();
    await page.locator('#thread-dialog[open]').waitFor({ timeout: WAIT });
    assert.equal(await page.locator('#thread-replies > li').count(), 4);
    await page.keyboard.press('Escape');
    assert.deepEqual(errors, []);
  });
});
