// End-to-end tests of confab's built-in web client in a real browser
// (Debian's chromium, driven by playwright-core). Two people, one on a
// desktop-sized window and one on a phone-sized one, chat through the
// already built debug binary: nothing is built here.
//
//   cargo build && (cd e2e && npm ci && npm test)
//
// CONFAB_BIN and CHROMIUM override the binary and the browser.

import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  ARTIFACTS, CHROMIUM, LAUNCH_ARGS, PASSWORD, WAIT, XSS, accessible, cli, connState, ctx, http, makePng, message,
  openNav, register, restartOnSamePort, send, shot, sleep, startServer, step, stopServer, waitFor, watch,
} from './harness.mjs';

describe('the built-in web client', { timeout: 600_000 }, () => {
  let server;
  let base;
  let browser;
  let alice;
  let bob;
  let aliceSeen;
  let bobSeen;

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    ctx.dataDir = await mkdtemp(path.join(os.tmpdir(), 'confab-e2e-'));
    ctx.serverLog = createWriteStream(path.join(ARTIFACTS, 'server.log'));
    server = await startServer('127.0.0.1:0');
    base = server.url;
    // launch() gives every run a fresh, temporary user-data directory.
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: LAUNCH_ARGS });
    const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const phone = await browser.newContext({
      viewport: { width: 390, height: 780 },
      isMobile: true,
      hasTouch: true,
      deviceScaleFactor: 2,
    });
    alice = await desktop.newPage();
    bob = await phone.newPage();
    aliceSeen = watch(alice);
    bobSeen = watch(bob);
  });

  after(async () => {
    for (const [name, page] of [['alice-final', alice], ['bob-final', bob]]) {
      if (page) await shot(page, `${name}.png`).catch(() => {});
    }
    await browser?.close().catch(() => {});
    if (server) await stopServer(server, 'SIGTERM').catch(() => {});
    ctx.serverLog?.end();
    if (ctx.dataDir) await rm(ctx.dataDir, { recursive: true, force: true });
  });

  step('serves the client, and two people register from it', async () => {
    await register(alice, base, 'alice');
    await register(bob, base, 'bob');
    await shot(bob, 'phone-empty.png');
    await accessible(alice, 'chat, desktop, no conversation');
    await accessible(bob, 'chat, phone, no conversation');
  });

  step('creates a room, which the other finds in the directory and joins', async () => {
    await alice.locator('#open-directory').click();
    await alice.locator('#new-room-name').fill('general');
    await alice.locator('#new-room-topic').fill('say hi');
    await accessible(alice, 'rooms dialog');
    await alice.getByRole('button', { name: 'Create room', exact: true }).click();
    await waitFor(alice.locator('#room-name', { hasText: '#general' }));
    assert.equal(await alice.locator('#directory-dialog').isVisible(), false);

    await openNav(bob);
    await bob.locator('#open-directory').click();
    await bob.getByRole('button', { name: 'Join general' }).click();
    await waitFor(bob.locator('#room-name', { hasText: '#general' }));
    await waitFor(bob.locator('#room-topic', { hasText: 'say hi' }));
  });

  step('shows who is online', async () => {
    await waitFor(alice.locator('#online-list', { hasText: 'bob' }));
    await waitFor(alice.locator('#room-presence', { hasText: '2 online' }));
    await openNav(bob);
    await waitFor(bob.locator('#online-list', { hasText: 'alice' }));
    await shot(bob, 'phone-nav.png');
    await accessible(bob, 'chat, phone, drawer open');
    await bob.locator('#scrim').click({ position: { x: 370, y: 400 } });
  });

  step('shows typing, delivers messages live, and keeps HTML as text', async () => {
    await bob.locator('#input').pressSequentially('hello from');
    await waitFor(alice.locator('#typing', { hasText: 'bob is typing…' }));
    await bob.locator('#input').pressSequentially(' bob');
    await bob.locator('#input').press('Enter');
    await waitFor(message(alice, 'hello from bob'));
    await alice.waitForFunction(() => document.getElementById('typing').textContent === '');

    // Shift+Enter is a new line, Enter sends.
    const input = alice.locator('#input');
    await input.pressSequentially('line one');
    await input.press('Shift+Enter');
    await input.pressSequentially('line two');
    await input.press('Enter');
    const twoLines = message(bob, 'line one');
    await waitFor(twoLines);
    assert.equal(await twoLines.locator('.body').innerText(), 'line one\nline two');

    await send(alice, XSS);
    const xss = message(bob, XSS);
    await waitFor(xss);
    assert.equal(await xss.locator('.body').textContent(), XSS);
    assert.equal(await bob.locator('#messages img[src="x"]').count(), 0);
    assert.equal(await alice.locator('#messages img[src="x"]').count(), 0);
    await sleep(300); // an onerror handler, had one been made, fires at once
    assert.deepEqual(aliceSeen.dialogs, []);
    assert.deepEqual(bobSeen.dialogs, []);

    // A right-to-left override stays inside its own message: the text is
    // kept as sent, isolated from the sender's name and the notes beside it.
    const rlo = '\u202Egnp.exe';
    await send(alice, rlo);
    const flipped = message(bob, rlo);
    await waitFor(flipped);
    const bdi = flipped.locator('.body bdi');
    assert.equal(await bdi.textContent(), rlo);
    assert.equal(await bdi.evaluate((e) => getComputedStyle(e).unicodeBidi), 'isolate');
  });

  step('starts a DM by username, counts it unread, and marks it read', async () => {
    await openNav(bob);
    await bob.locator('#open-dm').click();
    // A name nobody has is refused in the dialog, not opened as a
    // conversation that fails on its first message.
    await bob.locator('#dm-username').fill('nobody_here');
    await bob.locator('#dm-username').press('Enter');
    await waitFor(bob.locator('#dm-error', { hasText: 'There is no user named nobody_here.' }));
    assert.equal(await bob.locator('#dm-dialog').isVisible(), true);
    assert.equal(await bob.locator('#dm-list button.conv', { hasText: 'nobody_here' }).count(), 0);
    await accessible(bob, 'direct message dialog, with an error');
    await bob.locator('#dm-username').fill('alice');
    await bob.locator('#dm-username').press('Enter');
    await waitFor(bob.locator('#room-name', { hasText: '@alice' }));
    await send(bob, 'psst, alice');
    await waitFor(message(bob, 'psst, alice'));

    const dm = alice.locator('#dm-list button.conv', { hasText: 'bob' });
    await waitFor(dm.locator('.badge', { hasText: '1' }));
    assert.match(await alice.title(), /^\(1\) confab$/);
    await dm.click();
    await waitFor(message(alice, 'psst, alice'));
    await alice.waitForFunction(() => !document.querySelector('#dm-list .badge'));
    await waitFor(bob.locator('#messages .seen', { hasText: 'Seen by alice' }));
    await send(alice, 'hi bob, only you can read this');
    await waitFor(message(bob, 'only you can read this'));
  });

  step('uploads an image with a preview, and the other side gets its thumbnail', async () => {
    await alice.locator('#room-list button.conv', { hasText: 'general' }).click();
    await waitFor(alice.locator('#room-name', { hasText: '#general' }));
    await alice.locator('#file').setInputFiles({ name: 'gradient.png', mimeType: 'image/png', buffer: makePng(96, 64) });
    await waitFor(alice.locator('#tray .tray-item.done'));
    assert.match(await alice.locator('#tray img').getAttribute('src'), /^blob:/);
    await send(alice, 'a picture');
    await waitFor(alice.locator('#messages .thumb img'));
    assert.equal(await alice.locator('#tray').isVisible(), false);

    // Bob is in the DM: general counts the new messages as unread.
    await openNav(bob);
    await waitFor(bob.locator('#room-list button.conv', { hasText: 'general' }).locator('.badge'));
    await bob.locator('#room-list button.conv', { hasText: 'general' }).click();
    const thumb = message(bob, 'a picture').locator('.thumb img');
    await waitFor(thumb);
    assert.match(new URL(await thumb.getAttribute('src'), base).pathname, /^\/uploads\/[^/]+\/thumb$/);
    await bob.waitForFunction(() => {
      const img = document.querySelector('#messages .thumb img');
      return img && img.complete && img.naturalWidth > 0;
    }, null, { timeout: WAIT });
    await bob.locator('#input').pressSequentially('nice colours');
    await waitFor(alice.locator('#typing', { hasText: 'bob is typing…' }));
    await shot(alice, 'desktop-chat.png');
    await shot(bob, 'phone-chat.png');
    await accessible(alice, 'chat, desktop');
    await accessible(bob, 'chat, phone, drawer closed');
    await bob.locator('#input').press('Enter');
    await waitFor(message(alice, 'nice colours'));

    await thumb.click();
    await waitFor(bob.locator('#image-dialog'));
    await bob.waitForFunction(() => {
      const img = document.getElementById('image-full');
      return img.complete && img.naturalWidth === 96 && /^\/uploads\/[^/]+$/.test(new URL(img.src).pathname);
    }, null, { timeout: WAIT });
    await accessible(bob, 'image dialog');
    await bob.keyboard.press('Escape');
    await bob.locator('#image-dialog').waitFor({ state: 'hidden', timeout: WAIT });
  });

  step('refuses an oversize image or file before uploading it, and explains server refusals', async () => {
    const uploads = [];
    const onRequest = (r) => { if (new URL(r.url()).pathname === '/api/uploads') uploads.push(r); };
    alice.on('request', onRequest);
    try {
      // 7.2 MB: over the 5 MB limit, refused without a byte sent.
      const big = Buffer.alloc(Math.round(7.2 * 1024 * 1024));
      await alice.locator('#file').setInputFiles({ name: 'huge.png', mimeType: 'image/png', buffer: big });
      await waitFor(alice.locator('#toasts .toast', { hasText: 'huge.png is 7.2 MB; the limit is 5 MB.' }));
      // Any other file may be shared, up to its own (larger) limit.
      const archive = Buffer.alloc(26 * 1024 * 1024);
      await alice.locator('#file').setInputFiles({ name: 'archive.zip', mimeType: 'application/zip', buffer: archive });
      await waitFor(alice.locator('#toasts .toast', { hasText: 'archive.zip is 26 MB; the limit is 25 MB.' }));
      assert.equal(await alice.locator('#tray').isVisible(), false);
      assert.equal(uploads.length, 0);

      // A file that claims to be a PNG but is not one gets past the page and
      // is refused by the server; the tray says so in plain words.
      await alice.locator('#file').setInputFiles({ name: 'fake.png', mimeType: 'image/png', buffer: Buffer.from('not a png at all') });
      const failed = alice.locator('#tray .tray-item.failed');
      await waitFor(failed);
      assert.equal(uploads.length, 1);
      assert.equal(await failed.locator('.tray-status').textContent(), 'Not a JPEG, PNG, GIF or WebP image that can be read.');
      await failed.getByRole('button', { name: 'Remove fake.png' }).click();
      assert.equal(await alice.locator('#tray').isVisible(), false);
    } finally {
      alice.off('request', onRequest);
    }
  });

  step('edits and deletes one\'s own messages', async () => {
    // By id: while it is being edited its text is in a textarea, not the li.
    const id = await message(alice, XSS).getAttribute('data-id');
    const mine = alice.locator(`#messages > li[data-id="${id}"]`);
    await mine.hover();
    await mine.getByRole('button', { name: 'Edit' }).click();
    const editor = mine.locator('textarea');
    await editor.fill('edited: now plain');
    await editor.press('Enter');
    await waitFor(message(bob, 'edited: now plain').locator('.edited'));

    // Esc closes the confirmation and nothing is deleted.
    const targetId = await message(alice, 'line one').getAttribute('data-id');
    const target = alice.locator(`#messages > li[data-id="${targetId}"]`);
    await target.hover();
    await target.getByRole('button', { name: 'Delete' }).click();
    await waitFor(alice.locator('#confirm-dialog'));
    await accessible(alice, 'confirm dialog');
    await alice.keyboard.press('Escape');
    await alice.locator('#confirm-dialog').waitFor({ state: 'hidden', timeout: WAIT });
    await target.hover();
    await target.getByRole('button', { name: 'Delete' }).click();
    await alice.locator('#confirm-ok').click();
    await waitFor(bob.locator('#messages > li.deleted', { hasText: 'message deleted' }));
    assert.equal(await message(bob, 'line one').count(), 0);
  });

  step('finds history after a reload and loads older pages on scroll-up', async () => {
    const token = await alice.evaluate(() => localStorage.getItem('confab.token'));
    const room = await alice.locator('#room-list button.current').getAttribute('data-room');
    for (let i = 1; i <= 120; i++) {
      await http(base, 'POST', `/api/rooms/${room}/messages`, token, { text: `filler ${i}` });
    }
    await waitFor(message(bob, 'filler 120'));

    await bob.reload();
    await connState(bob, 'connected');
    await waitFor(bob.locator('#room-name', { hasText: '#general' }));
    await waitFor(message(bob, 'filler 120'));
    assert.equal(await message(bob, 'hello from bob').count(), 0, 'only the latest page at first');
    for (let i = 0; i < 10 && (await message(bob, 'hello from bob').count()) === 0; i++) {
      await bob.locator('#timeline').evaluate((el) => { el.scrollTop = 0; });
      await sleep(300);
    }
    await waitFor(message(bob, 'hello from bob'));
    await waitFor(bob.locator('#history-state', { hasText: 'This is the start of #general.' }));
    await bob.locator('#timeline').evaluate((el) => { el.scrollTop = el.scrollHeight; });
  });

  step('keeps the timeline to one Tab stop, with keys to move, edit and delete', async () => {
    await waitFor(message(alice, 'filler 120'));
    const focused = () => alice.evaluate(() => {
      const el = document.activeElement;
      if (!el || !el.closest('#timeline')) return el ? `outside:${el.id || el.tagName}` : 'none';
      if (el.matches('#messages > li.msg')) return `message:${el.querySelector('.body')?.textContent}`;
      if (el.closest('.msg-actions')) return `action:${el.textContent}`;
      return el.tagName.toLowerCase();
    });
    await alice.locator('#input').focus();
    await alice.keyboard.press('Shift+Tab');
    assert.equal(await focused(), 'outside:attach');
    // Backwards through 120+ messages of one's own: one stop for the
    // messages (the one last focused), none for their Edit and Delete buttons.
    const visited = [];
    let where = '';
    for (let i = 0; i < 10; i++) {
      await alice.keyboard.press('Shift+Tab');
      where = await focused();
      if (where.startsWith('outside:')) break;
      visited.push(where);
    }
    assert.match(where, /^outside:/, `still in the timeline after ${visited.join(', ')}`);
    assert.deepEqual(visited.filter((v) => v.startsWith('action:')), []);
    assert.equal(visited.filter((v) => v.startsWith('message:')).length, 1, visited.join(', '));

    // A click focuses a message; End and the arrow keys move; e edits;
    // Escape gives the focus back to the composer, and Shift+Tab returns to
    // the message last visited.
    await message(alice, 'filler 117').click();
    assert.equal(await focused(), 'message:filler 117');
    await alice.keyboard.press('End');
    assert.equal(await focused(), 'message:filler 120');
    await alice.keyboard.press('ArrowUp');
    assert.equal(await focused(), 'message:filler 119');
    await alice.keyboard.press('e');
    const editor = alice.locator('#messages > li.msg textarea');
    await waitFor(editor);
    assert.equal(await editor.inputValue(), 'filler 119');
    await editor.press('Escape');
    await editor.waitFor({ state: 'detached', timeout: WAIT });
    await alice.locator('#input').focus();
    await alice.keyboard.press('Shift+Tab');
    await alice.keyboard.press('Shift+Tab');
    assert.equal(await focused(), 'message:filler 119');
    await alice.keyboard.press('d');
    await waitFor(alice.locator('#confirm-dialog'));
    await accessible(alice, 'confirm dialog');
    await alice.keyboard.press('Escape');
    await alice.locator('#confirm-dialog').waitFor({ state: 'hidden', timeout: WAIT });
    assert.equal(await message(alice, 'filler 119').count(), 1);
  });

  step('reconnects by itself after the server restarts, and recovers what it missed', async () => {
    const aliceToken = await alice.evaluate(() => localStorage.getItem('confab.token'));
    const bobToken = await bob.evaluate(() => localStorage.getItem('confab.token'));
    const room = await alice.locator('#room-list button.current').getAttribute('data-room');
    const sentBefore = bobSeen.sent.length;

    await stopServer(server, 'SIGKILL');
    await connState(alice, 'reconnecting');
    await connState(bob, 'reconnecting');
    await waitFor(alice.locator('#conn', { hasText: 'reconnecting…' }));

    // Written while the browsers are away: the same data, another port.
    await send(alice, 'typed while offline');
    await waitFor(alice.locator('#pending li', { hasText: 'waiting for the connection' }));
    const side = await startServer('127.0.0.1:0');
    await http(side.url, 'POST', `/api/rooms/${room}/messages`, bobToken, { text: 'missed while away' });
    await http(side.url, 'POST', '/api/dm/alice/messages', bobToken, { text: 'a DM while you were away' });
    await stopServer(side, 'SIGTERM');
    assert.ok(aliceToken);

    server = await restartOnSamePort(base);
    await connState(alice, 'connected');
    await connState(bob, 'connected');
    await waitFor(message(bob, 'missed while away'));
    await waitFor(message(alice, 'missed while away'));
    await waitFor(message(bob, 'typed while offline'));
    await alice.locator('#pending li').first().waitFor({ state: 'detached', timeout: WAIT });
    await waitFor(alice.locator('#dm-list button.conv', { hasText: 'bob' }).locator('.badge', { hasText: '1' }));

    const recovery = bobSeen.sent.slice(sentBefore)
      .filter((f) => f.type === 'history' && f.data && f.data.room === room && typeof f.data.after === 'number');
    assert.ok(recovery.length > 0, 'bob caught up with history {after}');
    await shot(alice, 'desktop-after-restart.png');
  });

  step('shows announcements and a kick with its reason', async () => {
    await cli('announce', 'Maintenance tonight at 22:00');
    await waitFor(alice.locator('#banner', { hasText: 'Maintenance tonight at 22:00' }));
    await waitFor(bob.locator('#banner', { hasText: 'Maintenance tonight at 22:00' }));
    await accessible(alice, 'chat, desktop, announcement');
    await alice.locator('#banner-close').click();

    await cli('user', 'kick', 'bob', '--reason', 'cool off');
    await waitFor(bob.locator('#kicked-dialog', { hasText: 'cool off' }));
    await accessible(bob, 'disconnected dialog');
    await connState(bob, 'offline');
    await bob.getByRole('button', { name: 'Reconnect' }).click();
    await connState(bob, 'connected');
  });

  step('lays out a phone: announcements, a shrinking viewport and a failed message', async () => {
    // An announcement takes the phone's width, not a column beside its title.
    await cli('announce', 'The server moves to a new machine tonight; expect a minute of reconnecting.');
    const text = bob.locator('#banner-text', { hasText: 'new machine tonight' });
    await waitFor(text);
    const width = (await text.boundingBox()).width;
    assert.ok(width >= 0.8 * 390, `the announcement is ${width}px wide on a 390px phone`);
    await bob.locator('#banner-close').click();

    // An on-screen keyboard shrinks the viewport: the newest message stays
    // in sight, with no gap under it.
    await bob.setViewportSize({ width: 390, height: 844 });
    await send(bob, 'the newest message');
    await waitFor(message(bob, 'the newest message'));
    await bob.evaluate(() => { const tl = document.getElementById('timeline'); tl.scrollTop = tl.scrollHeight; });
    await bob.waitForFunction(() => {
      const tl = document.getElementById('timeline');
      return tl.scrollHeight - tl.scrollTop - tl.clientHeight < 2;
    }, null, { timeout: WAIT });
    await bob.setViewportSize({ width: 390, height: 500 });
    const atBottom = () => bob.waitForFunction(() => {
      const tl = document.getElementById('timeline');
      const last = [...document.querySelectorAll('#messages > li, #pending > li')].pop();
      const box = tl.getBoundingClientRect();
      const msg = last.getBoundingClientRect();
      return tl.clientHeight < 400 && tl.scrollHeight - tl.scrollTop - tl.clientHeight < 2
        && msg.top >= box.top && msg.bottom <= box.bottom + 1;
    }, null, { timeout: 3000 });
    await atBottom();

    // A message the server refuses shows Retry and Discard in sight, above
    // the composer, not under it.
    await send(bob, 'a bell \u0007 in the text');
    const failed = bob.locator('#pending li.failed');
    await waitFor(failed);
    const discard = failed.getByRole('button', { name: 'Discard' });
    await bob.waitForFunction(() => {
      const row = document.querySelector('#pending li.failed .msg-actions');
      const tl = document.getElementById('timeline').getBoundingClientRect();
      const composer = document.getElementById('composer').getBoundingClientRect();
      const r = row.getBoundingClientRect();
      const hit = document.elementFromPoint(r.left + 10, r.top + r.height / 2);
      return r.top >= tl.top && r.bottom <= tl.bottom + 1 && r.bottom <= composer.top + 1 && row.contains(hit);
    }, null, { timeout: 3000 });
    await discard.click();
    await failed.waitFor({ state: 'detached', timeout: WAIT });
    await bob.setViewportSize({ width: 390, height: 780 });
  });

  step('changes the password and stays signed in, then logs out everywhere', async () => {
    const NEW_PASSWORD = 'a brand new battery staple';
    const oldToken = await alice.evaluate(() => localStorage.getItem('confab.token'));
    await alice.locator('#me-name').click();
    await waitFor(alice.locator('#account-dialog'));
    await accessible(alice, 'account dialog');

    // A wrong current password is said in plain words, and changes nothing.
    await alice.locator('#current-password').fill('not my password');
    await alice.locator('#new-password').fill(NEW_PASSWORD);
    await alice.getByRole('button', { name: 'Change password' }).click();
    await waitFor(alice.locator('#password-error', { hasText: 'The current password is wrong.' }));
    await accessible(alice, 'account dialog, with an error');

    await alice.locator('#current-password').fill(PASSWORD);
    await alice.getByRole('button', { name: 'Change password' }).click();
    await alice.locator('#account-dialog').waitFor({ state: 'hidden', timeout: WAIT });
    await waitFor(alice.locator('#toasts .toast', { hasText: 'Your password is changed.' }));
    const newToken = await alice.evaluate(() => localStorage.getItem('confab.token'));
    assert.ok(newToken && newToken !== oldToken, 'the new token is stored');
    // The session goes on: the old connection ended, the new token connects.
    await connState(alice, 'connected');
    await send(alice, 'still here after a new password');
    await waitFor(message(bob, 'still here after a new password'));
    assert.equal(await alice.locator('#login').isVisible(), false);

    // A second device signs in with the new password...
    const other = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    try {
      // Records how the page's connections close, to see the server's 4001.
      await other.addInitScript(() => {
        const Native = window.WebSocket;
        window.confabCloses = [];
        window.WebSocket = class extends Native {
          constructor(...args) {
            super(...args);
            this.addEventListener('close', (ev) => window.confabCloses.push(ev.code));
          }
        };
      });
      const second = await other.newPage();
      await second.goto(base);
      await waitFor(second.locator('#login-form'));
      await second.locator('#login-username').fill('alice');
      await second.locator('#login-password').fill(NEW_PASSWORD);
      await second.getByRole('button', { name: 'Sign in' }).click();
      await connState(second, 'connected');

      // ...and "Log out everywhere" on the first ends both.
      await alice.locator('#me-name').click();
      await alice.getByRole('button', { name: 'Log out everywhere' }).click();
      await waitFor(alice.locator('#login-form'));
      await waitFor(alice.locator('#login-error', { hasText: 'You are signed out on every device.' }));
      await waitFor(second.locator('#login-form'));
      await waitFor(second.locator('#login-error', { hasText: 'Your session has ended.' }));
      assert.deepEqual(await second.evaluate(() => window.confabCloses), [4001]);
      assert.equal(await second.evaluate(() => localStorage.getItem('confab.token')), null);
      const refused = await fetch(new URL('/api/me', base), { headers: { authorization: `Bearer ${newToken}` } });
      assert.equal(refused.status, 401);
    } finally {
      await other.close();
    }

    // The new password signs in again.
    await alice.locator('#login-username').fill('alice');
    await alice.locator('#login-password').fill(NEW_PASSWORD);
    await alice.getByRole('button', { name: 'Sign in' }).click();
    await connState(alice, 'connected');

    // A plain "Sign out" ends this token on the server too.
    const signedIn = await alice.evaluate(() => localStorage.getItem('confab.token'));
    const loggedOut = alice.waitForResponse((r) => r.url().endsWith('/api/auth/logout'));
    await alice.locator('#logout').click();
    assert.equal((await loggedOut).status(), 204);
    await waitFor(alice.locator('#login-form'));
    const ended = await fetch(new URL('/api/me', base), { headers: { authorization: `Bearer ${signedIn}` } });
    assert.equal(ended.status, 401);
    await alice.locator('#login-username').fill('alice');
    await alice.locator('#login-password').fill(NEW_PASSWORD);
    await alice.getByRole('button', { name: 'Sign in' }).click();
    await connState(alice, 'connected');
  });

  step('ran without a script error or a policy violation', () => {
    assert.deepEqual(aliceSeen.errors, []);
    assert.deepEqual(bobSeen.errors, []);
    assert.deepEqual(aliceSeen.csp, []);
    assert.deepEqual(bobSeen.csp, []);
    assert.deepEqual([...aliceSeen.dialogs, ...bobSeen.dialogs], []);
  });
});
