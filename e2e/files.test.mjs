// Files and link previews in the web client, in a real browser against the
// debug binary: a PDF becomes a tile with its name, size and a download
// link, a WAV plays in an <audio> player, a link gets a card whose picture
// confab serves (the page comes from a tiny local site the server is
// allowed to reach), and "No link previews" sends a link without one. The
// tiles and cards are reachable by keyboard; axe checks the screen.
//
//   cargo build && (cd e2e && npm ci && npm test)

import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  ARTIFACTS, CHROMIUM, LAUNCH_ARGS, SERVER_ENV, WAIT, accessible, ctx, makePng, message, register,
  send, shot, startServer, step, waitFor, watch,
} from './harness.mjs';

// The site listens on 127.0.0.2: the only address the server may fetch from.
const SITE_IP = '127.0.0.2';
const ENV = {
  ...SERVER_ENV,
  CONFAB_SERVER_FETCH_ALLOWED_HOSTS: SITE_IP,
};

function startSite() {
  const hits = new Map();
  const png = makePng(60, 40);
  const server = http.createServer((req, res) => {
    hits.set(req.url, (hits.get(req.url) || 0) + 1);
    if (req.url.startsWith('/article')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(`<!doctype html><html><head><title>fallback</title>
        <meta property="og:title" content="Rivers of the North">
        <meta property="og:description" content="A long read about cold water.">
        <meta property="og:site_name" content="The Local Times">
        <meta property="og:image" content="/picture.png"></head><body>…</body></html>`);
    } else if (req.url === '/picture.png') {
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': png.length });
      res.end(png);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((resolve) => {
    server.listen(0, SITE_IP, () => resolve({ server, hits, base: `http://${SITE_IP}:${server.address().port}` }));
  });
}

/** A short valid WAV: 0.1 s of silence, 8 kHz mono. */
function makeWav() {
  const samples = 800;
  const b = Buffer.alloc(44 + samples * 2);
  b.write('RIFF', 0); b.writeUInt32LE(36 + samples * 2, 4); b.write('WAVE', 8);
  b.write('fmt ', 12); b.writeUInt32LE(16, 16); b.writeUInt16LE(1, 20); b.writeUInt16LE(1, 22);
  b.writeUInt32LE(8000, 24); b.writeUInt32LE(16000, 28); b.writeUInt16LE(2, 32); b.writeUInt16LE(16, 34);
  b.write('data', 36); b.writeUInt32LE(samples * 2, 40);
  return b;
}

describe('files and link previews in the web client', { timeout: 300_000 }, () => {
  let server;
  let site;
  let browser;
  let page;
  let seen;

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    ctx.dataDir = await mkdtemp(path.join(os.tmpdir(), 'confab-e2e-files-'));
    site = await startSite();
    server = await startServer('127.0.0.1:0', ENV);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: LAUNCH_ARGS });
    page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    seen = watch(page);
  });

  after(async () => {
    if (page) await shot(page, 'files-final.png').catch(() => {});
    await browser?.close().catch(() => {});
    if (server) server.child.kill('SIGTERM');
    site?.server.close();
    if (ctx.dataDir) await rm(ctx.dataDir, { recursive: true, force: true });
  });

  step('a file and a sound become a download tile and a player', async () => {
    await register(page, server.url, 'filer');
    await page.locator('#open-directory').click();
    await page.locator('#new-room-name').fill('shared');
    await page.getByRole('button', { name: 'Create room', exact: true }).click();
    await waitFor(page.locator('#room-name', { hasText: '#shared' }));
    await page.locator('#file').setInputFiles([
      { name: 'minutes.pdf', mimeType: 'application/pdf', buffer: Buffer.from('%PDF-1.4\n'.repeat(300)) },
      { name: 'tone.wav', mimeType: 'audio/wav', buffer: makeWav() },
    ]);
    await waitFor(page.locator('#tray .tray-item.done', { hasText: 'minutes.pdf' }));
    await waitFor(page.locator('#tray .tray-item.done', { hasText: 'tone.wav' }));
    await send(page, 'the minutes and a tone');
    const msg = message(page, 'the minutes and a tone');
    await waitFor(msg.locator('.file-tile', { hasText: 'minutes.pdf' }));
    const link = msg.locator('.file-tile a.file-download', { hasText: 'minutes.pdf' });
    assert.match(await link.getAttribute('href'), /\/uploads\/[0-9a-f]{32}$/);
    assert.equal(await link.getAttribute('download'), 'minutes.pdf');
    assert.match(await link.textContent(), /3 KB/);
    const audio = msg.locator('audio');
    await waitFor(audio);
    assert.match(await audio.getAttribute('src'), /\/uploads\/[0-9a-f]{32}$/);
    // The download is served as one, never as a page.
    const href = new URL(await link.getAttribute('href'), server.url);
    const r = await fetch(href);
    assert.match(r.headers.get('content-disposition'), /^attachment; filename="minutes.pdf"/);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    // Keyboard: the download link takes the focus.
    await link.focus();
    assert.ok(await link.evaluate((el) => el === document.activeElement));
  });

  step('a link gets a card with a picture served by confab', async () => {
    const url = `${site.base}/article/1`;
    await send(page, `worth reading: ${url}`);
    const card = message(page, 'worth reading').locator('a.preview-card');
    await waitFor(card);
    assert.equal(await card.getAttribute('href'), url);
    assert.match(await card.textContent(), /Rivers of the North/);
    assert.match(await card.textContent(), /The Local Times/);
    const img = card.locator('img');
    await waitFor(img);
    const src = await img.getAttribute('src');
    assert.equal(new URL(src).origin, new URL(server.url).origin, 'the picture comes from confab, not the site');
    assert.match(new URL(src).pathname, /^\/previews\/[0-9a-f]{64}$/);
    await page.waitForFunction((el) => el.complete && el.naturalWidth > 0, await img.elementHandle(), { timeout: WAIT });
    assert.equal(site.hits.get('/picture.png'), 1);
    await card.focus();
    assert.ok(await card.evaluate((el) => el === document.activeElement));
    await shot(page, 'files-previews.png');
    await accessible(page, 'files and link previews');
  });

  step('"No link previews" sends a link without a card', async () => {
    await page.locator('#no-previews').check();
    await send(page, `quiet ${site.base}/article/2`);
    await page.locator('#no-previews').uncheck();
    await send(page, `loud ${site.base}/article/3`);
    await waitFor(message(page, 'loud').locator('a.preview-card'));
    assert.equal(await message(page, 'quiet').locator('a.preview-card').count(), 0);
    assert.equal(site.hits.get('/article/2') || 0, 0, 'the page was never fetched');
    assert.deepEqual(seen.errors, []);
    assert.deepEqual(seen.csp, []);
  });
});
