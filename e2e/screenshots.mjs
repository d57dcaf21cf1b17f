// Makes the README's pictures of the web client from a real browser run:
// docs/web-client.png (a desktop) and docs/web-client-phone.png (a phone).
// A fresh server with a few people, a room with a conversation, pictures
// and images, someone typing. Against the already built debug binary:
//
//   cargo build && (cd e2e && npm ci && node screenshots.mjs)

import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, LAUNCH_ARGS, PASSWORD, ROOT, connState, ctx, http, makePng, message, startServer, stopServer, waitFor,
} from './harness.mjs';

ctx.dataDir = await mkdtemp(path.join(os.tmpdir(), 'confab-screenshots-'));
ctx.serverLog = createWriteStream(path.join(os.tmpdir(), 'confab-screenshots.log'));
const server = await startServer('127.0.0.1:0');
const base = server.url;
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: LAUNCH_ARGS });

try {
  const tokens = {};
  for (const name of ['alice', 'bob', 'carol']) {
    const resp = await fetch(new URL('/api/auth/register', base), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: name, password: PASSWORD }),
    });
    tokens[name] = (await resp.json()).token;
  }
  const upload = async (who, w, h) => {
    const form = new FormData();
    form.append('file', new Blob([makePng(w, h)], { type: 'image/png' }), 'picture.png');
    const r = await fetch(new URL('/api/uploads', base), {
      method: 'POST', headers: { authorization: `Bearer ${tokens[who]}` }, body: form,
    });
    return (await r.json()).id;
  };
  // bob has a picture; alice and carol show their initials.
  await http(base, 'POST', '/api/me/avatar', tokens.bob, { upload: await upload('bob', 96, 96) });
  const room = (await http(base, 'POST', '/api/rooms', tokens.alice, { name: 'general', topic: 'Anything goes. Be kind.' })).room.id;
  await http(base, 'POST', '/api/rooms', tokens.alice, { name: 'photos', topic: 'Show us what you saw' });
  for (const who of ['bob', 'carol']) {
    await http(base, 'POST', `/api/rooms/${room}/members`, tokens[who], { username: who });
  }
  const say = (who, text, attachments) => http(base, 'POST', `/api/rooms/${room}/messages`, tokens[who], { text, attachments });
  await say('alice', 'Morning! The new server is up: tell me if anything feels slow.');
  await say('bob', 'Feels quick here. Pictures from the trip:', [await upload('bob', 640, 480), await upload('bob', 480, 640)]);
  await say('carol', 'Lovely colours. Which lake was that?');
  await say('bob', 'The one past the ridge, about an hour on foot.');
  await say('alice', 'Adding it to the list for next month.');
  await http(base, 'POST', '/api/dm/alice/messages', tokens.carol, { text: 'Lunch later?' });

  const pages = {};
  for (const [name, opts] of [
    ['alice', { viewport: { width: 1280, height: 800 } }],
    ['bob', { viewport: { width: 390, height: 780 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 }],
    ['carol', { viewport: { width: 800, height: 600 } }],
  ]) {
    const page = await (await browser.newContext({ ...opts, colorScheme: 'light' })).newPage();
    await page.goto(base);
    await waitFor(page.locator('#login-form'));
    await page.locator('#login-username').fill(name);
    await page.locator('#login-password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await connState(page, 'connected');
    pages[name] = page;
  }
  for (const page of Object.values(pages)) {
    if (await page.locator('#menu').isVisible()) await page.locator('#menu').click();
    await page.locator('#room-list button.conv', { hasText: 'general' }).click();
    await waitFor(message(page, 'Adding it to the list'));
    await page.waitForFunction(() => [...document.querySelectorAll('#messages img')].every((i) => i.complete && i.naturalWidth > 0));
  }
  // carol is typing.
  await pages.carol.locator('#input').pressSequentially('Was it cold up');
  await waitFor(pages.alice.locator('#typing', { hasText: 'carol is typing' }));
  await pages.bob.locator('#input').fill('On my way back now');
  for (const page of Object.values(pages)) {
    await page.evaluate(() => { const tl = document.getElementById('timeline'); tl.scrollTop = tl.scrollHeight; });
  }
  await pages.alice.screenshot({ path: path.join(ROOT, 'docs', 'web-client.png'), animations: 'disabled' });
  await pages.bob.screenshot({ path: path.join(ROOT, 'docs', 'web-client-phone.png'), animations: 'disabled' });
  console.log('wrote docs/web-client.png and docs/web-client-phone.png');
} finally {
  await browser.close().catch(() => {});
  await stopServer(server, 'SIGTERM').catch(() => {});
  ctx.serverLog.end();
  await rm(ctx.dataDir, { recursive: true, force: true });
}
