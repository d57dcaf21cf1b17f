// Mentions and unread counts in the built-in web client, in a real
// browser: @-autocomplete in the composer, a mention that stands out, a
// mention badge apart from the unread badge, the "new messages" line, the
// tab's title and icon, and one user's two browsers agreeing: reading in
// one clears the badge in the other.
//
//   cargo build && (cd e2e && npm ci && npm test)

import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  ARTIFACTS, CHROMIUM, PASSWORD, WAIT, accessible, ctx, http, shot, signIn, startServer, step, waitFor,
} from './harness.mjs';

const conv = (page, name) => page.locator('#room-list button.conv', { hasText: name });

async function openRoom(page, name) {
  await conv(page, name).click();
  await waitFor(page.locator('#room-name', { hasText: `#${name}` }));
}

describe('mentions and unread counts in the web client', { timeout: 180_000 }, () => {
  let server;
  let base;
  let browser;
  let alice;
  let bobA;
  let bobB;
  const errors = [];

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    ctx.dataDir = await mkdtemp(path.join(os.tmpdir(), 'confab-e2e-attention-'));
    ctx.serverLog = createWriteStream(path.join(ARTIFACTS, 'server-attention.log'));
    server = await startServer('127.0.0.1:0');
    base = server.url;
    const tokens = {};
    for (const name of ['alice', 'bob', 'carol']) {
      tokens[name] = (await http(base, 'POST', '/api/auth/register', null, { username: name, password: PASSWORD })).token;
    }
    for (const room of ['lobby', 'other']) {
      const { room: r } = await http(base, 'POST', '/api/rooms', tokens.alice, { name: room });
      for (const name of ['bob', 'carol']) {
        await fetch(new URL(`/api/rooms/${r.id}/members`, base), {
          method: 'POST',
          headers: { authorization: `Bearer ${tokens.alice}`, 'content-type': 'application/json' },
          body: JSON.stringify({ username: name }),
        });
      }
    }
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'] });
    // One person, two browsers (each context is its own storage), and alice.
    const page = async () => {
      const p = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
      p.on('pageerror', (e) => errors.push(String(e)));
      return p;
    };
    alice = await page();
    bobA = await page();
    bobB = await page();
  });

  after(async () => {
    for (const [name, p] of [['attention-alice', alice], ['attention-bob-a', bobA], ['attention-bob-b', bobB]]) {
      if (p) await shot(p, `${name}.png`).catch(() => {});
    }
    await browser?.close().catch(() => {});
    if (server) server.child.kill('SIGTERM');
    ctx.serverLog?.end();
    if (ctx.dataDir) await rm(ctx.dataDir, { recursive: true, force: true });
  });

  step('signs in alice, and bob in two browsers, looking at another room', async () => {
    await signIn(alice, base, 'alice');
    await openRoom(alice, 'lobby');
    for (const p of [bobA, bobB]) {
      await signIn(p, base, 'bob');
      await openRoom(p, 'other');
    }
  });

  step('completes @names from the room\'s members with the keyboard', async () => {
    const input = alice.locator('#input');
    const list = alice.locator('#mention-list');
    await input.pressSequentially('@c');
    await waitFor(list.getByRole('option', { name: '@carol' }));
    await input.press('Escape');
    await list.waitFor({ state: 'hidden', timeout: WAIT });
    assert.equal(await input.inputValue(), '@c');
    await input.fill('');

    await input.pressSequentially('hi @');
    await waitFor(list.getByRole('option', { name: '@bob' }));
    // Members, then the keywords the creator of the room may use.
    const options = await list.getByRole('option').allTextContents();
    assert.deepEqual(options.map((o) => o.split(' ')[0]), ['@bob', '@carol', '@here', '@room']);
    assert.equal(await input.getAttribute('aria-activedescendant'), 'mention-opt-0');
    await input.press('ArrowDown');
    assert.equal(await list.locator('[aria-selected="true"]').textContent(), '@carol');
    await input.press('ArrowUp');
    await accessible(alice, 'composer with @-autocomplete open');
    await shot(alice, 'mention-autocomplete.png');
    await input.pressSequentially('b');
    assert.deepEqual(await list.getByRole('option').allTextContents(), ['@bob']);
    await input.press('Tab');
    assert.equal(await input.inputValue(), 'hi @bob ');
    await list.waitFor({ state: 'hidden', timeout: WAIT });
    await input.pressSequentially('look at this');
    await input.press('Enter');
    await waitFor(alice.locator('#messages > li', { hasText: 'hi @bob look at this' }));
    // Enter took the name rather than sending while the list was open.
    await input.pressSequentially('and @ca');
    await waitFor(list.getByRole('option', { name: '@carol' }));
    await input.press('Enter');
    assert.equal(await input.inputValue(), 'and @carol ');
    await input.press('Enter');
    await waitFor(alice.locator('#messages > li', { hasText: 'and @carol' }));
    await input.fill('three');
    await input.press('Enter');
    await waitFor(alice.locator('#messages > li', { hasText: 'three' }));
  });

  step('counts unread messages and mentions apart, in the list, the title and the icon', async () => {
    for (const p of [bobA, bobB]) {
      const lobby = conv(p, 'lobby');
      await waitFor(lobby.locator('.badge:not(.mention-badge)', { hasText: '3' }));
      await waitFor(lobby.locator('.mention-badge', { hasText: '@1' }));
      assert.equal(await lobby.locator('.mention-badge').getAttribute('aria-label'), '1 mention');
      await p.waitForFunction(() => document.title === '(3) confab', null, { timeout: WAIT });
      const icon = await p.locator('link[rel="icon"]').getAttribute('href');
      assert.match(icon, /^data:image\/svg\+xml,/);
      assert.match(decodeURIComponent(icon), />3<\/text>/);
    }
    await accessible(bobB, 'room list with unread and mention badges');
    await shot(bobB, 'badges.png');
  });

  step('opens the room at a "new messages" line, the mention standing out', async () => {
    await openRoom(bobA, 'lobby');
    const items = bobA.locator('#messages > li');
    await waitFor(bobA.locator('#messages > li.divider'));
    const classes = await items.evaluateAll((els) => els.map((e) => e.className));
    const at = classes.findIndex((c) => c.includes('divider'));
    assert.ok(at >= 0 && classes[at + 1].includes('mentions-me'), classes.join(' | '));
    const mine = bobA.locator('#messages > li.mentions-me');
    assert.equal(await mine.count(), 1);
    assert.equal(await mine.locator('.mention.me').textContent(), '@bob');
    const other = bobA.locator('#messages > li', { hasText: 'and @carol' });
    assert.equal(await other.locator('.mention:not(.me)').textContent(), '@carol');
    await accessible(bobA, 'room with a new-messages line and a mention');
    await shot(bobA, 'divider-and-mention.png');
  });

  step('reading in one browser clears the other at once', async () => {
    // bobB did nothing: the server's unread event cleared it.
    const lobby = conv(bobB, 'lobby');
    await lobby.locator('.badge').first().waitFor({ state: 'detached', timeout: WAIT });
    await bobB.waitForFunction(() => document.title === 'confab', null, { timeout: WAIT });
    const icon = await bobB.locator('link[rel="icon"]').getAttribute('href');
    assert.doesNotMatch(icon, /^data:/);
    assert.equal(await conv(bobA, 'lobby').locator('.badge').count(), 0);
    // A new mention counts again, live, in both browsers (neither shows
    // the room now).
    await openRoom(bobA, 'other');
    await alice.locator('#input').fill('@bob again');
    await alice.locator('#input').press('Enter');
    for (const p of [bobA, bobB]) {
      await waitFor(conv(p, 'lobby').locator('.mention-badge', { hasText: '@1' }));
    }
    assert.deepEqual(errors, []);
  });
});
