// Browser tests of invite links and of posts from an incoming webhook, on
// a server where registering needs an invite: an admin makes, copies and
// revokes links in the room dialog; a newcomer opens one, registers with
// it and lands in the private room; an existing user opens one, signs in
// and joins.
//
//   cargo build && (cd e2e && npm ci && node --test invites.test.mjs)

import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  ARTIFACTS, BIN, CHROMIUM, LAUNCH_ARGS, PASSWORD, SERVER_ENV, WAIT, accessible, cli, connState, ctx, http,
  message, openConversation, shot, signIn, startServer, step, stopServer, waitFor, watch,
} from './harness.mjs';

const ENV = { ...SERVER_ENV, CONFAB_AUTH_REGISTRATION: 'invite' };

/** An account made by the operator (registration is by invite only). */
function account(name, role = 'user') {
  execFileSync(BIN, ['--data-dir', ctx.dataDir, 'user', 'add', name, '--role', role, '--password-stdin'], {
    env: ENV,
    input: `${PASSWORD}\n`,
  });
}

const token = (page) => page.evaluate(() => localStorage.getItem('confab.token'));

/** The codes the room dialog lists. */
const listedCodes = (page) => page.locator('#invite-list li').evaluateAll((lis) => lis.map((li) => li.dataset.code));

async function makeLink(page, uses) {
  const before = await listedCodes(page);
  if (uses) await page.locator('#invite-max-uses').fill(String(uses));
  await page.getByRole('button', { name: 'Create link' }).click();
  let made;
  await page.waitForFunction((n) => document.querySelectorAll('#invite-list li').length > n, before.length, { timeout: WAIT });
  for (const c of await listedCodes(page)) if (!before.includes(c)) made = c;
  assert.ok(made, 'a new link is listed');
  return made;
}

describe('invite links in the web client', { timeout: 600_000 }, () => {
  let server;
  let base;
  let browser;
  let admin;
  let newcomer;
  let member;
  let firstCode;
  let adminSeen;

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    ctx.dataDir = await mkdtemp(path.join(os.tmpdir(), 'confab-e2e-invites-'));
    ctx.serverLog = createWriteStream(path.join(ARTIFACTS, 'server-invites.log'));
    server = await startServer('127.0.0.1:0', ENV);
    base = server.url;
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: LAUNCH_ARGS });
    const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await desktop.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
    admin = await desktop.newPage();
    adminSeen = watch(admin);
    newcomer = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    member = await (await browser.newContext({ viewport: { width: 390, height: 780 }, isMobile: true, hasTouch: true })).newPage();
  });

  after(async () => {
    for (const [name, page] of [['invites-admin-final', admin], ['invites-newcomer-final', newcomer]]) {
      if (page) await shot(page, `${name}.png`).catch(() => {});
    }
    await browser?.close().catch(() => {});
    if (server) await stopServer(server, 'SIGTERM').catch(() => {});
    ctx.serverLog?.end();
    if (ctx.dataDir) await rm(ctx.dataDir, { recursive: true, force: true });
  });

  step('an admin makes, copies and lists invite links in the room dialog', async () => {
    account('boss', 'admin');
    account('olduser');
    await signIn(admin, base, 'boss');
    await http(base, 'POST', '/api/rooms', await token(admin), { name: 'secret', visibility: 'private' });
    await openConversation(admin, 'room-list', 'secret');
    await admin.locator('#room-info').click();
    await waitFor(admin.locator('#invites-section'));
    firstCode = await makeLink(admin, 1);
    // Made links are copied at once.
    const copied = await admin.evaluate(() => navigator.clipboard.readText());
    assert.equal(copied, `${base.replace(/\/$/, '')}/invite/${firstCode}`);
    const row = admin.locator(`#invite-list li[data-code="${firstCode}"]`);
    assert.match(await row.textContent(), /0\/1 used/);
    await shot(admin, 'invites-dialog.png');
    await accessible(admin, 'room dialog with invites');
  });

  step('a newcomer opens the link, registers with it and is in the private room', async () => {
    await newcomer.goto(`${base.replace(/\/$/, '')}/invite/${firstCode}`);
    const banner = newcomer.locator('#invite-banner');
    await waitFor(banner);
    assert.match(await banner.textContent(), /invited to #secret/);
    await accessible(newcomer, 'sign-in with an invite');
    await newcomer.locator('#login-username').fill('newbie');
    await newcomer.locator('#login-password').fill(PASSWORD);
    await newcomer.getByRole('button', { name: 'Create account' }).click();
    await connState(newcomer, 'connected');
    await newcomer.waitForFunction(() => document.getElementById('room-name').textContent.includes('secret'), null, { timeout: WAIT });
    assert.equal(new URL(newcomer.url()).pathname, '/');
    await newcomer.locator('#input').fill('hello, thanks for the invite');
    await newcomer.locator('#input').press('Enter');
    await waitFor(message(admin, 'hello, thanks for the invite'));
    // Its one use is spent: the dialog says so.
    await admin.locator('#room-dialog button[aria-label="Close"]').click();
    await admin.locator('#room-info').click();
    await admin.waitForFunction((c) => /1\/1 used/.test(document.querySelector(`#invite-list li[data-code="${c}"]`)?.textContent || ''), firstCode, { timeout: WAIT });
  });

  step('a signed-out user opens a link, signs in and joins; a revoked link is refused', async () => {
    const code = await makeLink(admin);
    const revoked = await makeLink(admin);
    await admin.locator(`#invite-list li[data-code="${revoked}"] button.invite-revoke`).click();
    await admin.waitForFunction((c) => !document.querySelector(`#invite-list li[data-code="${c}"]`), revoked, { timeout: WAIT });

    await member.goto(`${base.replace(/\/$/, '')}/invite/${revoked}`);
    await waitFor(member.locator('#invite-banner'));
    assert.match(await member.locator('#invite-banner').textContent(), /not valid/);

    await member.goto(`${base.replace(/\/$/, '')}/invite/${code}`);
    await waitFor(member.locator('#invite-banner'));
    await member.locator('#login-username').fill('olduser');
    await member.locator('#login-password').fill(PASSWORD);
    await member.getByRole('button', { name: 'Sign in' }).click();
    await connState(member, 'connected');
    await member.waitForFunction(() => document.getElementById('room-name').textContent.includes('secret'), null, { timeout: WAIT });
    await waitFor(message(member, 'hello, thanks for the invite'));
  });

  step('posts from an incoming webhook are marked as a bot’s', async () => {
    const { stdout } = await cli('room', 'hook', 'add', 'secret', '--name', 'deploys');
    const url = stdout.split('\n').map((l) => l.trim()).find((l) => l.includes('/hooks/'));
    assert.ok(url, stdout);
    const resp = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ text: 'deployed v1.2.3', username: 'Deploy bot' }),
    });
    assert.equal(resp.status, 200, await resp.text());
    const posted = message(admin, 'deployed v1.2.3');
    await waitFor(posted);
    assert.equal(await posted.locator('.bot-badge').count(), 1);
    assert.match(await posted.textContent(), /Deploy bot/);
    await shot(admin, 'invites-hook-post.png');
    assert.deepEqual(adminSeen.errors, []);
  });
});
