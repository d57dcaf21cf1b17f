// Reactions and pins in the web client, in a real browser (Debian's
// chromium, driven by playwright-core), against the already built debug
// binary: two people in two browser contexts see each other's reactions
// arrive live, toggle them from the chips and from the keyboard, the
// picker remembers recent emoji, and the room's creator pins a message
// that the other finds in the room's pinned list. axe checks the picker
// and the pinned list in light and dark.
//
//   cargo build && (cd e2e && npm ci && npm test)

import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  ARTIFACTS, CHROMIUM, LAUNCH_ARGS, PASSWORD, WAIT, accessible, ctx, http, message, openConversation,
  send, shot, signIn, startServer, step, watch,
} from './harness.mjs';

describe('reactions and pins in the web client', { timeout: 300_000 }, () => {
  let server;
  let browser;
  let alice;
  let bob;
  let seenA;
  let seenB;
  let room;

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    ctx.dataDir = await mkdtemp(path.join(os.tmpdir(), 'confab-e2e-reactions-'));
    server = await startServer('127.0.0.1:0');
    const base = server.url;
    const a = await http(base, 'POST', '/api/auth/register', null, { username: 'alice', password: PASSWORD });
    const b = await http(base, 'POST', '/api/auth/register', null, { username: 'bob', password: PASSWORD });
    ({ room } = await http(base, 'POST', '/api/rooms', a.token, { name: 'garden' }));
    await http(base, 'POST', `/api/rooms/${room.id}/members`, b.token, { username: 'bob' });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: LAUNCH_ARGS });
    alice = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    bob = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    seenA = watch(alice);
    seenB = watch(bob);
  });

  after(async () => {
    if (alice) await shot(alice, 'reactions-alice-final.png').catch(() => {});
    if (bob) await shot(bob, 'reactions-bob-final.png').catch(() => {});
    await browser?.close().catch(() => {});
    if (server) server.child.kill('SIGTERM');
    if (ctx.dataDir) await rm(ctx.dataDir, { recursive: true, force: true });
  });

  const chip = (page, text, emoji) => message(page, text).locator('.reactions .chip', { hasText: emoji });

  step('both open the room and alice posts', async () => {
    for (const [page, name] of [[alice, 'alice'], [bob, 'bob']]) {
      await signIn(page, server.url, name);
      await openConversation(page, 'room-list', 'garden');
    }
    await send(alice, 'Tomatoes are ripe');
    await message(bob, 'Tomatoes are ripe').waitFor({ timeout: WAIT });
  });

  step('bob reacts from the picker and alice sees it live', async () => {
    const msg = message(bob, 'Tomatoes are ripe');
    await msg.hover();
    await msg.locator('.msg-react').click();
    await bob.locator('#react-dialog[open]').waitFor({ timeout: WAIT });
    await accessible(bob, 'reaction picker');
    await bob.locator('#react-palette button.emoji', { hasText: '🎉' }).click();
    await bob.locator('#react-dialog:not([open])').waitFor({ state: 'attached', timeout: WAIT });
    await chip(alice, 'Tomatoes are ripe', '🎉').waitFor({ timeout: WAIT });
    assert.equal((await chip(alice, 'Tomatoes are ripe', '🎉').textContent()).trim(), '🎉1');
    assert.equal(await chip(alice, 'Tomatoes are ripe', '🎉').getAttribute('aria-pressed'), 'false');
    assert.equal(await chip(alice, 'Tomatoes are ripe', '🎉').getAttribute('title'), 'bob');
    await chip(bob, 'Tomatoes are ripe', '🎉').waitFor({ timeout: WAIT });
    assert.equal(await chip(bob, 'Tomatoes are ripe', '🎉').getAttribute('aria-pressed'), 'true');
  });

  step('alice adds to it by clicking the chip; bob sees the count', async () => {
    await chip(alice, 'Tomatoes are ripe', '🎉').click();
    await alice.waitForFunction(() => document.querySelector('#messages .chip[aria-pressed="true"]'), null, { timeout: WAIT });
    await bob.waitForFunction(
      () => [...document.querySelectorAll('#messages .chip')].some((c) => c.textContent.includes('2')),
      null, { timeout: WAIT });
    assert.equal(await chip(bob, 'Tomatoes are ripe', '🎉').getAttribute('title'), 'bob, alice');
  });

  step('the keyboard reaches the picker, which remembers recent emoji', async () => {
    // A focused message opens the picker with R; the recent row leads.
    const msg = message(bob, 'Tomatoes are ripe');
    await msg.focus();
    await bob.keyboard.press('r');
    await bob.locator('#react-dialog[open]').waitFor({ timeout: WAIT });
    assert.equal(await bob.locator('#react-recent button.emoji').first().textContent(), '🎉');
    // Any emoji can be typed; a word is refused with the server's reason.
    await bob.locator('#react-input').fill('yes');
    await bob.locator('#react-input').press('Enter');
    await bob.locator('#react-error', { hasText: 'emoji' }).waitFor({ timeout: WAIT });
    await bob.locator('#react-input').fill('🇫🇷');
    await bob.locator('#react-input').press('Enter');
    await chip(alice, 'Tomatoes are ripe', '🇫🇷').waitFor({ timeout: WAIT });
    // Choosing an emoji one already reacted with takes it back.
    await msg.focus();
    await bob.keyboard.press('r');
    await bob.locator('#react-recent button.emoji', { hasText: '🇫🇷' }).focus();
    await bob.keyboard.press('Enter');
    await chip(alice, 'Tomatoes are ripe', '🇫🇷').waitFor({ state: 'detached', timeout: WAIT });
  });

  step('bob takes his back from the chip', async () => {
    await chip(bob, 'Tomatoes are ripe', '🎉').click();
    await alice.waitForFunction(
      () => [...document.querySelectorAll('#messages .chip')].some((c) => c.title === 'alice'),
      null, { timeout: WAIT });
    assert.equal((await chip(alice, 'Tomatoes are ripe', '🎉').textContent()).trim(), '🎉1');
  });

  step('the creator pins; the other finds it in the pinned list', async () => {
    // Bob, neither creator nor staff, has no Pin action.
    assert.equal(await message(bob, 'Tomatoes are ripe').locator('.msg-pin').count(), 0);
    const msg = message(alice, 'Tomatoes are ripe');
    await msg.focus();
    await alice.keyboard.press('i');
    await message(bob, 'Tomatoes are ripe').locator('.pinned-mark').waitFor({ timeout: WAIT });
    await send(alice, 'Later chatter');
    await message(bob, 'Later chatter').waitFor({ timeout: WAIT });
    await bob.locator('#room-pins').click();
    await bob.locator('#pins-dialog[open]').waitFor({ timeout: WAIT });
    await bob.locator('#pins-list li', { hasText: 'Tomatoes are ripe' }).waitFor({ timeout: WAIT });
    assert.equal(await bob.locator('#pins-list li').count(), 1);
    assert.equal(await bob.locator('#pins-list .pin-remove').count(), 0, 'bob may not unpin');
    await accessible(bob, 'pinned messages');
    await bob.locator('#pins-list button.search-hit').click();
    await bob.locator('#pins-dialog:not([open])').waitFor({ state: 'attached', timeout: WAIT });
    await bob.waitForFunction(() => document.activeElement?.matches('#messages > li.hit'), null, { timeout: WAIT });
  });

  step('unpinning from the list updates everyone', async () => {
    await alice.locator('#room-pins').click();
    await alice.locator('#pins-list .pin-remove').click();
    await alice.locator('#pins-state', { hasText: 'Nothing is pinned' }).waitFor({ timeout: WAIT });
    await message(bob, 'Tomatoes are ripe').locator('.pinned-mark').waitFor({ state: 'detached', timeout: WAIT });
    await alice.keyboard.press('Escape');
    assert.deepEqual([...seenA.errors, ...seenB.errors], []);
    assert.deepEqual([...seenA.csp, ...seenB.csp], []);
  });
});
