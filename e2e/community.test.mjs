// Browser tests of the web client's screens for running a community:
// moderation by staff, what the moderated are told, rooms, friends and
// profiles. A moderator on a desktop-sized window and a member on a
// phone-sized one, against the already built debug binary.
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
  ARTIFACTS, CHROMIUM, LAUNCH_ARGS, PASSWORD, WAIT, accessible, accessibleEverywhere, cli, connState, ctx,
  http, makePng, message, openConversation, openNav, send, shot, signIn, startServer, step, stopServer, waitFor,
  watch,
} from './harness.mjs';

/** An account made over HTTP, so a role can be given before it signs in. */
async function account(base, name) {
  const resp = await fetch(new URL('/api/auth/register', base), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: name, password: PASSWORD }),
  });
  assert.equal(resp.status, 201, `register ${name}`);
}

const token = (page) => page.evaluate(() => localStorage.getItem('confab.token'));

/** Clicks a confirmation's OK after checking what it says. */
async function confirm(page, ...phrases) {
  const text = page.locator('#confirm-text');
  await waitFor(text);
  const said = await text.textContent();
  for (const p of phrases) assert.ok(said.includes(p), `the confirmation “${said}” says “${p}”`);
  await page.locator('#confirm-ok').click();
  await page.locator('#confirm-dialog').waitFor({ state: 'hidden', timeout: WAIT });
  return said;
}

describe('the web client for a community', { timeout: 600_000 }, () => {
  let server;
  let base;
  let browser;
  let carol; // a moderator, on a desktop
  let dave; // a member, on a phone
  let carolSeen;
  let daveSeen;
  let room;

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    ctx.dataDir = await mkdtemp(path.join(os.tmpdir(), 'confab-e2e-community-'));
    ctx.serverLog = createWriteStream(path.join(ARTIFACTS, 'server-community.log'));
    server = await startServer('127.0.0.1:0');
    base = server.url;
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: LAUNCH_ARGS });
    const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const phone = await browser.newContext({
      viewport: { width: 390, height: 780 },
      isMobile: true,
      hasTouch: true,
      deviceScaleFactor: 2,
    });
    carol = await desktop.newPage();
    dave = await phone.newPage();
    carolSeen = watch(carol);
    daveSeen = watch(dave);
  });

  after(async () => {
    for (const [name, page] of [['carol-final', carol], ['dave-final', dave]]) {
      if (page) await shot(page, `${name}.png`).catch(() => {});
    }
    await browser?.close().catch(() => {});
    if (server) await stopServer(server, 'SIGTERM').catch(() => {});
    ctx.serverLog?.end();
    if (ctx.dataDir) await rm(ctx.dataDir, { recursive: true, force: true });
  });

  step('a moderator and a member meet in a room', async () => {
    await account(base, 'carol');
    await account(base, 'dave');
    await cli('user', 'role', 'carol', 'moderator');
    await signIn(carol, base, 'carol');
    await signIn(dave, base, 'dave');
    const made = await http(base, 'POST', '/api/rooms', await token(carol), { name: 'town', topic: 'the square' });
    room = made.room.id;
    await http(base, 'POST', `/api/rooms/${room}/members`, await token(carol), { username: 'dave' });
    await openConversation(carol, 'room-list', 'town');
    await openConversation(dave, 'room-list', 'town');
    await send(dave, 'hello from dave');
    await waitFor(message(carol, 'hello from dave'));
  });

  step('staff mute from a profile, and the muted see it before typing', async () => {
    await message(carol, 'hello from dave').locator('button.sender').click();
    await waitFor(carol.locator('#profile-dialog'));
    await waitFor(carol.locator('#profile-status', { hasText: 'online' }));
    await waitFor(carol.getByRole('button', { name: 'Mute dave' }));
    await accessibleEverywhere(carol, 'profile, with moderation');
    await carol.locator('#mod-reason').fill('calm down');
    await carol.locator('#mod-duration').selectOption('600');
    await carol.locator('#mod-scope').selectOption(room);
    await carol.getByRole('button', { name: 'Mute dave' }).click();
    await confirm(carol, 'Mute dave in #town for 10 minutes', 'calm down');

    const notice = dave.locator('#mute-notice');
    await waitFor(notice);
    const said = await notice.textContent();
    assert.match(said, /You are muted in #town until .+: calm down/);
    assert.equal(await dave.locator('#input').isDisabled(), true, 'the composer is off while muted');
    assert.equal(await dave.locator('#send').isDisabled(), true);
    await accessible(dave, 'chat, phone, muted');

    // Lifted: the composer comes back by itself.
    await http(base, 'POST', '/api/moderation/unmute', await token(carol), { username: 'dave', room });
    await notice.waitFor({ state: 'hidden', timeout: WAIT });
    assert.equal(await dave.locator('#input').isDisabled(), false);

    // A mute that was made while away is shown on connecting.
    await http(base, 'POST', '/api/moderation/mute', await token(carol), { username: 'dave', reason: 'a day off', duration_secs: 86400 });
    await waitFor(dave.locator('#mute-notice', { hasText: 'You are muted everywhere until' }));
    await dave.reload();
    await connState(dave, 'connected');
    await waitFor(dave.locator('#mute-notice', { hasText: 'a day off' }));
    assert.equal(await dave.locator('#input').isDisabled(), true);
    await http(base, 'POST', '/api/moderation/unmute', await token(carol), { username: 'dave' });
    await dave.locator('#mute-notice').waitFor({ state: 'hidden', timeout: WAIT });
    await carol.keyboard.press('Escape');
    await carol.locator('#profile-dialog').waitFor({ state: 'hidden', timeout: WAIT });
  });

  step('staff delete from a message menu, naming the author and the text', async () => {
    await send(dave, 'buy cheap pills');
    const target = message(carol, 'buy cheap pills');
    await waitFor(target);
    // The menu is reached by key on the focused message too.
    await target.click({ position: { x: 400, y: 10 } });
    await carol.keyboard.press('m');
    await waitFor(carol.getByRole('button', { name: 'Kick dave' }));
    await carol.keyboard.press('Escape');
    await target.hover();
    await target.getByRole('button', { name: 'Delete' }).click();
    await confirm(carol, 'Delete dave’s message', 'buy cheap pills');
    await waitFor(dave.locator('#messages > li.deleted', { hasText: 'message deleted' }));
    const audit = await http(base, 'GET', '/api/moderation/audit', await token(carol));
    assert.ok(audit.entries.some((e) => e.action === 'delete_message' && e.target === 'dave'), 'the deletion is audited');
  });

  step('staff kick, and announce', async () => {
    await message(carol, 'hello from dave').locator('button.sender').click();
    await carol.locator('#mod-reason').fill('take five');
    await carol.getByRole('button', { name: 'Kick dave' }).click();
    await confirm(carol, 'Kick dave?', 'take five');
    await waitFor(dave.locator('#kicked-dialog', { hasText: 'take five' }));
    await dave.getByRole('button', { name: 'Reconnect' }).click();
    await connState(dave, 'connected');
    await carol.keyboard.press('Escape');

    await carol.locator('#announce-open').click();
    await waitFor(carol.locator('#announce-dialog'));
    await accessibleEverywhere(carol, 'announce dialog');
    await carol.locator('#announce-text').fill('The square closes at nine.');
    await carol.locator('#announce-scope').selectOption('');
    await carol.getByRole('button', { name: 'Send announcement' }).click();
    await confirm(carol, 'Announce to everyone on the server', 'The square closes at nine.');
    await waitFor(dave.locator('#banner', { hasText: 'The square closes at nine.' }));
    await dave.locator('#banner-close').click();
  });

  step('a banned user is told until when and why, with no Reconnect', async () => {
    await message(carol, 'hello from dave').locator('button.sender').click();
    await carol.locator('#mod-reason').fill('spam');
    await carol.locator('#mod-duration').selectOption('3600');
    await carol.getByRole('button', { name: 'Ban dave' }).click();
    await confirm(carol, 'Ban dave for 1 hour', 'spam');
    const dialog = dave.locator('#kicked-dialog');
    await waitFor(dialog.locator('#kicked-text', { hasText: /You are banned until .+: spam/ }));
    assert.equal(await dave.getByRole('button', { name: 'Reconnect' }).isVisible(), false);
    await accessible(dave, 'banned dialog');
    await shot(dave, 'phone-banned.png');

    // Coming back later with the same token says the same.
    await dave.reload();
    await waitFor(dave.locator('#kicked-text', { hasText: /You are banned until .+: spam/ }));
    assert.equal(await dave.getByRole('button', { name: 'Reconnect' }).isVisible(), false);
    await dave.getByRole('button', { name: 'Sign out' }).click();
    await dave.locator('#login-username').fill('dave');
    await dave.locator('#login-password').fill(PASSWORD);
    await dave.getByRole('button', { name: 'Sign in' }).click();
    await waitFor(dave.locator('#login-error', { hasText: /This account is banned until .+: spam/ }));
    await carol.keyboard.press('Escape');
    await http(base, 'POST', '/api/moderation/unban', await token(carol), { username: 'dave' });
    await dave.getByRole('button', { name: 'Sign in' }).click();
    await connState(dave, 'connected');
  });

  step('manages a room: members online first, adding, renaming, leaving and deleting', async () => {
    await account(base, 'erin');
    // A private room: only its owner (or staff) adds people.
    const made = await http(base, 'POST', '/api/rooms', await token(carol), { name: 'backroom', visibility: 'private' });
    await openConversation(carol, 'room-list', 'backroom');
    await carol.locator('#room-info').click();
    await waitFor(carol.locator('#room-dialog'));
    await waitFor(carol.locator('#members-state', { hasText: '1 member, 1 online' }));
    await carol.locator('#add-member-name').fill('nobody-here');
    await carol.getByRole('button', { name: 'Add', exact: true }).click();
    await waitFor(carol.locator('#add-member-error', { hasText: 'There is no user named nobody-here.' }));
    await carol.locator('#add-member-name').fill('erin');
    await carol.getByRole('button', { name: 'Add', exact: true }).click();
    await waitFor(carol.locator('#members-state', { hasText: '2 members, 1 online' }));
    await carol.locator('#add-member-name').fill('dave');
    await carol.getByRole('button', { name: 'Add', exact: true }).click();
    await waitFor(carol.locator('#members-state', { hasText: '3 members, 2 online' }));
    await openConversation(dave, 'room-list', 'backroom');
    // Online first, then by name: erin has never signed in.
    const names = await carol.locator('#member-list .member .name').allTextContents();
    assert.deepEqual(names, ['carol (you)', 'dave', 'erin']);
    await accessibleEverywhere(carol, 'room dialog, owner');
    await shot(carol, 'desktop-room.png');

    // A member opens a profile from the list, and messages them from it.
    await carol.locator('#member-list .member', { hasText: 'erin' }).click();
    await waitFor(carol.locator('#profile-status', { hasText: 'offline' }));
    await carol.getByRole('button', { name: 'Message erin' }).click();
    await waitFor(carol.locator('#room-name', { hasText: '@erin' }));
    assert.equal(await carol.locator('#room-dialog').isVisible(), false);

    // Name and topic, by the owner.
    await openConversation(carol, 'room-list', 'backroom');
    await carol.locator('#room-info').click();
    await carol.locator('#room-edit-name').fill('den');
    await carol.locator('#room-edit-topic').fill('where plans are made');
    await carol.getByRole('button', { name: 'Save', exact: true }).click();
    await waitFor(carol.locator('#room-dialog-title', { hasText: '#den' }));
    await waitFor(dave.locator('#room-name', { hasText: '#den' }));
    await waitFor(dave.locator('#room-topic', { hasText: 'where plans are made' }));
    await carol.keyboard.press('Escape');

    // A member neither renames nor deletes; they leave, with a confirmation.
    await dave.locator('#room-info').click();
    await waitFor(dave.locator('#room-dialog'));
    assert.equal(await dave.locator('#room-edit-form').isVisible(), false);
    assert.equal(await dave.locator('#room-delete').isVisible(), false);
    assert.equal(await dave.locator('#add-member-form').isVisible(), false, 'only the owner adds to a private room');
    await accessible(dave, 'room dialog, member, phone');
    await dave.locator('#room-leave').click();
    await confirm(dave, 'Leave #den?', 'someone must add you again');
    await dave.locator('#room-dialog').waitFor({ state: 'hidden', timeout: WAIT });
    await dave.locator('#room-list button.conv', { hasText: 'den' }).waitFor({ state: 'detached', timeout: WAIT });

    // The owner deletes it, naming it.
    await carol.locator('#room-info').click();
    await waitFor(carol.locator('#members-state', { hasText: '2 members' }));
    await carol.locator('#room-delete').click();
    await confirm(carol, 'Delete #den for its 2 members');
    await carol.locator('#room-list button.conv', { hasText: 'den' }).waitFor({ state: 'detached', timeout: WAIT });
    const gone = await fetch(new URL(`/api/rooms/${made.room.id}`, base), { headers: { authorization: `Bearer ${await token(carol)}` } });
    assert.equal(gone.status, 404);
  });

  step('friends: requests in and out, presence, blocks and the DM policy', async () => {
    // dave asks carol from his Friends dialog (on a phone, in the drawer).
    await openNav(dave);
    await dave.locator('#open-friends').click();
    await waitFor(dave.locator('#friends-dialog'));
    await waitFor(dave.locator('#friend-list', { hasText: 'No friends yet' }));
    await accessible(dave, 'friends dialog, phone, empty');
    await dave.locator('#friend-add-name').fill('carol');
    await dave.getByRole('button', { name: 'Send request' }).click();
    await waitFor(dave.locator('#outgoing-list', { hasText: 'carol' }));

    // carol sees a request waiting, and accepts it.
    await waitFor(carol.locator('#friends-badge', { hasText: '1' }));
    await carol.locator('#open-friends').click();
    await waitFor(carol.locator('#incoming-list', { hasText: 'dave' }));
    await accessibleEverywhere(carol, 'friends dialog, a request in');
    await carol.getByRole('button', { name: 'Accept dave' }).click();
    await waitFor(carol.locator('#friend-list .friend-row', { hasText: 'dave' }).locator('.state', { hasText: 'online' }));
    await waitFor(dave.locator('#friend-list .friend-row', { hasText: 'carol' }).locator('.state', { hasText: 'online' }));
    assert.equal(await carol.locator('#friends-badge').isVisible(), false);
    assert.equal(await dave.locator('#outgoing-list', { hasText: 'carol' }).count(), 0);
    await shot(dave, 'phone-friends.png');

    // dave takes direct messages from friends only.
    await dave.getByLabel('Only friends').check();
    await waitFor(dave.locator('#dm-policy-state', { hasText: 'Only friends may send you direct messages.' }));
    const me = await http(base, 'GET', '/api/me', await token(dave));
    assert.equal(me.dm_policy, 'friends');
    await dave.keyboard.press('Escape');

    // From a member's profile: end the friendship, block and unblock.
    await carol.keyboard.press('Escape');
    await openConversation(carol, 'room-list', 'town');
    await carol.locator('#room-info').click();
    await carol.locator('#member-list .member', { hasText: 'dave' }).click();
    await waitFor(carol.getByRole('button', { name: 'Remove friend' }));
    await carol.getByRole('button', { name: 'Remove friend' }).click();
    await confirm(carol, 'Remove dave from your friends?');
    await waitFor(carol.getByRole('button', { name: 'Add friend' }));

    // Block and unblock from a profile; the block shows in the Friends dialog.
    await carol.getByRole('button', { name: 'Block dave' }).click();
    await confirm(carol, 'Block dave?', 'They are not told');
    await waitFor(carol.getByRole('button', { name: 'Unblock dave' }));
    const blocks = await http(base, 'GET', '/api/blocks', await token(carol));
    assert.deepEqual(blocks.users.map((u) => u.username), ['dave']);
    await accessibleEverywhere(carol, 'profile, blocked');
    await carol.getByRole('button', { name: 'Unblock dave' }).click();
    await waitFor(carol.getByRole('button', { name: 'Block dave' }));
    await carol.getByRole('button', { name: 'Block dave' }).click();
    await confirm(carol, 'Block dave?');
    await carol.keyboard.press('Escape');
    await carol.keyboard.press('Escape');
    await carol.locator('#open-friends').click();
    await waitFor(carol.locator('#blocked-list', { hasText: 'dave' }));
    await carol.getByRole('button', { name: 'Unblock dave' }).click();
    await waitFor(carol.locator('#blocked-list', { hasText: 'Nobody.' }));
    await carol.keyboard.press('Escape');
  });

  step('a picture of one\'s own, beside one\'s messages, initials without one', async () => {
    // Without a picture, a message shows its sender's initials.
    const before = message(carol, 'hello from dave');
    await waitFor(before.locator('.avatar', { hasText: 'DA' }));

    await openNav(dave);
    await dave.locator('#me-name').click();
    await waitFor(dave.locator('#account-dialog'));
    await waitFor(dave.locator('#account-avatar', { hasText: 'DA' }));
    assert.equal(await dave.locator('#avatar-remove').isVisible(), false);
    await dave.locator('#avatar-file').setInputFiles({ name: 'me.png', mimeType: 'image/png', buffer: makePng(120, 90) });
    await waitFor(dave.locator('#account-avatar img'));
    await waitFor(dave.locator('#avatar-remove'));
    await accessible(dave, 'account dialog with a picture, phone');
    await dave.keyboard.press('Escape');

    // Others see it beside every message of his, at once.
    const img = message(carol, 'hello from dave').locator('.avatar img');
    await waitFor(img);
    await carol.waitForFunction(() => {
      const el = [...document.querySelectorAll('#messages > li')].find((li) => li.textContent.includes('hello from dave'));
      const pic = el && el.querySelector('.avatar img');
      return pic && pic.complete && pic.naturalWidth > 0 && /^\/uploads\/[0-9a-f]+\/thumb$/.test(new URL(pic.src).pathname);
    }, null, { timeout: WAIT });
    const box = await img.boundingBox();
    const text = await message(carol, 'hello from dave').locator('.body').boundingBox();
    assert.ok(box.x + box.width <= text.x, 'the picture is beside the text, not over it');
    await accessibleEverywhere(carol, 'chat with pictures');
    await shot(carol, 'desktop-avatars.png');
  });

  step('lays out image tiles: each as tall as its image, several as a grid that fits a phone', async () => {
    const t = await token(carol);
    async function up(w, hgt) {
      const form = new FormData();
      form.append('file', new Blob([makePng(w, hgt)], { type: 'image/png' }), 'tile.png');
      const r = await fetch(new URL('/api/uploads', base), { method: 'POST', headers: { authorization: `Bearer ${t}` }, body: form });
      assert.equal(r.status, 201);
      return (await r.json()).id;
    }
    const one = [await up(900, 300)];
    const many = [await up(400, 300), await up(200, 600), await up(50, 40), await up(640, 480)];
    await http(base, 'POST', `/api/rooms/${room}/messages`, t, { text: 'a wide one', attachments: one });
    await http(base, 'POST', `/api/rooms/${room}/messages`, t, { text: 'four shapes', attachments: many });
    for (const [page, who] of [[carol, 'desktop'], [dave, 'phone']]) {
      const msg = message(page, 'four shapes');
      await waitFor(msg);
      await page.waitForFunction(() => [...document.querySelectorAll('.thumb img')].every((i) => i.complete && i.naturalWidth > 0), null, { timeout: WAIT });
      const tiles = await msg.locator('.thumb').evaluateAll((els) => els.map((b) => {
        const r = b.getBoundingClientRect();
        const i = b.querySelector('img').getBoundingClientRect();
        return { tile: [r.left, r.right, r.height], img: i.height };
      }));
      assert.equal(tiles.length, 4);
      const body = await msg.evaluate((li) => li.getBoundingClientRect().right);
      for (const { tile: [left, right, height], img } of tiles) {
        assert.ok(Math.abs(height - img - 2) < 1.5, `${who}: a tile ${height}px tall holds an image ${img}px tall`);
        assert.ok(right <= body && left >= 0, `${who}: a tile from ${left} to ${right} fits the message (to ${body})`);
        assert.ok(height <= 170, `${who}: a tile among several stays small (${height}px)`);
      }
      await msg.scrollIntoViewIfNeeded();
      await shot(page, `${who}-tiles.png`);
    }
    await accessibleEverywhere(carol, 'image tiles');
  });

  step('ran without a script error or a policy violation', () => {
    assert.deepEqual(carolSeen.errors, []);
    assert.deepEqual(daveSeen.errors, []);
    assert.deepEqual(carolSeen.csp, []);
    assert.deepEqual(daveSeen.csp, []);
    assert.deepEqual([...carolSeen.dialogs, ...daveSeen.dialogs], []);
  });
});
