// Notifications in the built-in web client, in a real browser: the
// service worker at /sw.js, turning notifications on (permission asked
// only then), a push delivered to the worker through the DevTools
// protocol (ServiceWorker.deliverPushMessage) shown as a notification,
// opening the room it names, and the settings dialogs (axe-checked).
//
//   cargo build && (cd e2e && npm ci && npm test)

import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, PASSWORD, WAIT, accessible, ctx, http, startServer, step } from './harness.mjs';

/** Evaluates `fn` (which may be async) in the page until it gives a truthy value. */
async function poll(page, fn, arg) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const v = await page.evaluate(fn, arg);
    if (v) return v;
    assert.ok(Date.now() < deadline, `timed out waiting for ${fn}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('notifications in the web client', { timeout: 120_000 }, () => {
  let server;
  let base;
  let browser;
  let context;
  let page;
  let token;
  let lobby;
  let errors = [];

  before(async () => {
    ctx.dataDir = await mkdtemp(path.join(os.tmpdir(), 'confab-e2e-push-'));
    server = await startServer('127.0.0.1:0');
    base = server.url;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-quic'],
    });
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    page.on('pageerror', (e) => errors.push(String(e)));
  });

  after(async () => {
    await browser?.close();
    if (server) {
      server.child.removeAllListeners('exit');
      server.child.kill('SIGTERM');
    }
    if (ctx.dataDir) await rm(ctx.dataDir, { recursive: true, force: true });
  });

  step('the service worker is served at the root with its headers', async () => {
    const resp = await fetch(new URL('/sw.js', base));
    assert.equal(resp.status, 200);
    assert.match(resp.headers.get('content-type'), /^text\/javascript/);
    assert.equal(resp.headers.get('service-worker-allowed'), '/');
    assert.equal(resp.headers.get('cache-control'), 'no-cache');
    assert.match(await resp.text(), /addEventListener\('push'/);
  });

  step('nothing is registered or asked before notifications are turned on', async () => {
    await page.goto(base);
    await page.locator('#login-username').fill('alice');
    await page.locator('#login-password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.waitForFunction(() => document.getElementById('conn')?.dataset.state === 'connected', null, { timeout: WAIT });
    token = await page.evaluate(() => localStorage.getItem('confab.token'));
    assert.ok(token, 'the client keeps its token');
    lobby = (await http(base, 'POST', '/api/rooms', token, { name: 'lobby', visibility: 'public' })).room;
    const state = await page.evaluate(async () => ({
      permission: Notification.permission,
      registered: !!(await navigator.serviceWorker.getRegistration('/')),
    }));
    assert.deepEqual(state, { permission: 'default', registered: false });
  });

  step('turning notifications on asks, registers the worker and tries to subscribe', async () => {
    await context.grantPermissions(['notifications'], { origin: base });
    await page.locator('#me-name').click();
    await page.locator('#account-dialog').waitFor({ state: 'visible' });
    await accessible(page, 'account with notifications');
    await page.locator('#notify-toggle').click();
    // Headless Chromium has no push service: the subscription itself may
    // fail, and the client must say so rather than pretend.
    const outcome = await poll(page, async () => {
      const reg = await navigator.serviceWorker.getRegistration('/');
      const error = document.getElementById('notify-error').textContent;
      const on = /on on this browser/.test(document.getElementById('notify-state').textContent);
      return reg && reg.active && (error || on) ? { error, on } : null;
    });
    assert.ok(outcome.on || /subscribe/.test(outcome.error), JSON.stringify(outcome));
    console.log('subscription outcome in headless Chromium:', JSON.stringify(outcome));
    assert.equal(await page.evaluate(() => Notification.permission), 'granted');
    await page.keyboard.press('Escape');
  });

  step('a push delivered to the worker shows a notification', async () => {
    const cdp = await context.newCDPSession(page);
    const registrations = new Map();
    cdp.on('ServiceWorker.workerRegistrationUpdated', (e) => {
      for (const r of e.registrations) if (!r.isDeleted) registrations.set(r.scopeURL, r.registrationId);
    });
    await cdp.send('ServiceWorker.enable');
    const scope = new URL('/', base).href;
    const deadline = Date.now() + WAIT;
    while (!registrations.has(scope)) {
      assert.ok(Date.now() < deadline, `no registration for ${scope}: ${[...registrations.keys()]}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const payload = {
      room: { id: lobby.id, name: 'lobby', kind: 'room' },
      sender: { id: 'x', username: 'bob' },
      count: 2,
      reason: 'all',
      preview: 'are you there?',
    };
    await cdp.send('ServiceWorker.deliverPushMessage', {
      origin: new URL(base).origin,
      registrationId: registrations.get(scope),
      data: JSON.stringify(payload),
    });
    const list = await poll(page, async () => {
      const reg = await navigator.serviceWorker.getRegistration('/');
      const shown = reg ? await reg.getNotifications() : [];
      return shown.length ? shown.map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data })) : null;
    });
    assert.equal(list.length, 1);
    assert.equal(list[0].title, '#lobby');
    assert.equal(list[0].body, '2 new messages · bob: are you there?');
    assert.equal(list[0].tag, `room-${lobby.id}`);
    assert.deepEqual(list[0].data, { room: lobby.id });
  });

  step('the room a notification names opens in the page', async () => {
    // What the worker tells an open page on a click (notificationclick):
    // here said by the worker itself, since no click reaches a headless
    // notification.
    const workers = context.serviceWorkers();
    assert.ok(workers.length > 0, 'the worker runs');
    await page.evaluate(() => { document.getElementById('room-name').textContent = ''; });
    await workers[0].evaluate(async (room) => {
      const open = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      for (const c of open) c.postMessage({ type: 'open_room', room });
    }, lobby.id);
    await page.waitForFunction(() => document.getElementById('room-name').textContent === '#lobby', null, { timeout: WAIT });
  });

  step("a room's notification settings are saved from its menu", async () => {
    await page.locator('#room-notify').click();
    await page.locator('#room-notify-dialog').waitFor({ state: 'visible' });
    assert.ok(await page.locator('input[name="level"][value="mentions"]').isChecked(), 'the default is mentions');
    await accessible(page, 'room notifications');
    await page.locator('input[name="level"][value="all"]').check();
    await page.locator('#room-mute').check();
    await page.locator('#room-notify-form button[type="submit"]').click();
    await page.locator('#room-notify-dialog').waitFor({ state: 'hidden' });
    const saved = await http(base, 'GET', `/api/rooms/${lobby.id}/notifications`, token);
    assert.equal(saved.level, 'all');
    assert.equal(saved.muted, true);
  });

  step('do not disturb is saved from the account dialog', async () => {
    await page.locator('#me-name').click();
    await page.locator('#dnd-on').check();
    await page.locator('#dnd-start').fill('21:30');
    await page.locator('#dnd-end').fill('06:45');
    await page.getByRole('button', { name: 'Save do not disturb' }).click();
    await page.waitForFunction(() => /Quiet from 21:30/.test(document.getElementById('dnd-status').textContent), null, { timeout: WAIT });
    const s = await http(base, 'GET', '/api/me/notifications', token);
    assert.equal(s.dnd.start_min, 21 * 60 + 30);
    assert.equal(s.dnd.end_min, 6 * 60 + 45);
    assert.deepEqual(errors, []);
  });

  step("a muted room's unread count shows quietly and stays out of the title", async () => {
    await page.keyboard.press('Escape');
    const side = (await http(base, 'POST', '/api/rooms', token, { name: 'side', visibility: 'public' })).room;
    const sideButton = page.locator(`#room-list button[data-room="${side.id}"]`);
    await sideButton.waitFor({ state: 'visible', timeout: WAIT });
    await sideButton.click();
    await page.waitForFunction(() => document.getElementById('room-name').textContent === '#side', null, { timeout: WAIT });
    const bob = await http(base, 'POST', '/api/auth/register', null, { username: 'bob', password: PASSWORD });
    await http(base, 'POST', `/api/rooms/${lobby.id}/messages`, bob.token, { text: 'anyone here?' });
    const quietBadge = page.locator(`#room-list button[data-room="${lobby.id}"] .badge.quiet`);
    await quietBadge.waitFor({ state: 'visible', timeout: WAIT });
    assert.equal(await quietBadge.textContent(), '1');
    assert.equal(await page.title(), 'confab', 'a muted room adds nothing to the title');
    await accessible(page, 'muted room badge');
    // The same after a reload, from the settings the server keeps.
    await page.reload();
    await page.waitForFunction(() => document.getElementById('conn')?.dataset.state === 'connected', null, { timeout: WAIT });
    await quietBadge.waitFor({ state: 'visible', timeout: WAIT });
    assert.equal(await page.title(), 'confab');
    // Unmuted, it counts again.
    await http(base, 'PUT', `/api/rooms/${lobby.id}/notifications`, token, { level: 'all', muted: false });
    await page.reload();
    await page.waitForFunction(() => document.getElementById('conn')?.dataset.state === 'connected', null, { timeout: WAIT });
    await page.locator(`#room-list button[data-room="${lobby.id}"] .badge:not(.quiet):not(.mention-badge)`).waitFor({ state: 'visible', timeout: WAIT });
    assert.equal(await page.title(), '(1) confab');
    assert.deepEqual(errors, []);
  });
});
