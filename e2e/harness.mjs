// What the browser tests share: starting confab, driving Chromium, and
// checking a screen with axe-core in light and dark mode.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { it } from 'node:test';
import zlib from 'node:zlib';
import AxeBuilder from '@axe-core/playwright';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..');
export const TARGET = process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target');
export const BIN = process.env.CONFAB_BIN || path.join(TARGET, 'debug', 'confab');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const ARTIFACTS = path.join(HERE, 'artifacts');
export const WAIT = 15_000;
export const PASSWORD = 'correct horse battery';
export const XSS = '<img src=x onerror=alert(1)>';

// Cheap password hashing: these servers hold throwaway accounts.
export const SERVER_ENV = {
  ...process.env,
  CONFAB_AUTH_ARGON2_MEMORY_KIB: '64',
  CONFAB_AUTH_ARGON2_ITERATIONS: '1',
  // The test seeds history quickly from one address; the limits have
  // tests of their own.
  CONFAB_LIMITS_MESSAGES_PER_SEC: '10000',
  CONFAB_LIMITS_MESSAGES_BURST: '10000',
  CONFAB_LIMITS_AUTH_ATTEMPTS_PER_IP_PER_MIN: '10000',
  CONFAB_LIMITS_ROOM_CREATIONS_PER_HOUR: '10000',
  RUST_LOG: process.env.RUST_LOG || 'warn',
};

// ------------------------------------------------------------------ server

/** Where the server keeps its data, and where its output goes (if anywhere): set by each test file. */
export const ctx = { dataDir: null, serverLog: null };

/** Starts `confab serve` and resolves once it prints its address. */
export function startServer(bind, env = SERVER_ENV) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['serve', '--bind', bind, '--data-dir', ctx.dataDir], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let done = false;
    const finish = (f) => { if (!done) { done = true; clearTimeout(timer); f(); } };
    const timer = setTimeout(() => finish(() => {
      child.kill('SIGKILL');
      reject(new Error(`confab did not start within ${WAIT} ms: ${err}`));
    }), WAIT);
    child.stdout.on('data', (b) => {
      out += b;
      ctx.serverLog?.write(b);
      const m = out.match(/confab listening on (http:\/\/[^\s]+)/);
      if (m) finish(() => resolve({ child, url: m[1] }));
    });
    child.stderr.on('data', (b) => {
      err = (err + b).slice(-4000);
      ctx.serverLog?.write(b);
    });
    child.on('error', (e) => finish(() => reject(e)));
    child.on('exit', (code, signal) => finish(() => reject(new Error(`confab exited (${code ?? signal}): ${err}`))));
  });
}

export async function stopServer(server, signal) {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return;
  const exited = new Promise((r) => server.child.once('exit', r));
  server.child.kill(signal);
  await exited;
}

/** The same port again: the address a browser tab already has open. */
export async function restartOnSamePort(url) {
  const bind = new URL(url).host;
  let lastError;
  for (let i = 0; i < 20; i++) {
    try {
      return await startServer(bind);
    } catch (e) {
      lastError = e;
      await sleep(250);
    }
  }
  throw lastError;
}

export const run = promisify(execFile);
/** The operator's command line, through the running server's admin socket. */
export const cli = (...args) => run(BIN, ['--data-dir', ctx.dataDir, ...args], { env: SERVER_ENV });

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function http(base, method, urlPath, token, body) {
  const resp = await fetch(new URL(urlPath, base), {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await resp.json().catch(() => null);
  assert.ok(resp.ok, `${method} ${urlPath}: ${resp.status} ${JSON.stringify(json)}`);
  return json;
}

// The steps of a test file build on each other: after the first failure
// the rest are skipped rather than failing for the same reason.
let broken = false;
export function step(name, fn) {
  it(name, async (t) => {
    if (broken) {
      t.skip('an earlier step failed');
      return;
    }
    try {
      await fn();
    } catch (e) {
      broken = true;
      throw e;
    }
  });
}

// --------------------------------------------------------------- a png

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

/** A small RGB gradient PNG, made here so the test ships no binary file. */
export function makePng(width, height) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, no interlace
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3);
    for (let x = 0; x < width; x++) {
      row[1 + x * 3] = Math.round((x / width) * 255);
      row[2 + x * 3] = Math.round((y / height) * 255);
      row[3 + x * 3] = 180;
    }
    rows.push(row);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(Buffer.concat(rows))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

// ------------------------------------------------------------- browser

export const LAUNCH_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

/** What a page did that a test must see: dialogs, errors, frames. */
export function watch(page) {
  const seen = { dialogs: [], errors: [], csp: [], sent: [] };
  page.on('dialog', (d) => {
    seen.dialogs.push(d.message());
    d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => seen.errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content.Security.Policy/i.test(m.text())) seen.csp.push(m.text());
  });
  page.on('websocket', (ws) => {
    ws.on('framesent', (f) => {
      try { seen.sent.push(JSON.parse(f.payload)); } catch { /* not JSON */ }
    });
  });
  return seen;
}

/** A screenshot in e2e/artifacts/, with transitions run to their end. */
export const shot = (page, name) => page.screenshot({ path: path.join(ARTIFACTS, name), animations: 'disabled' });

export const waitFor = (locator) => locator.waitFor({ state: 'visible', timeout: WAIT });

export async function connState(page, state) {
  await page.waitForFunction(
    (s) => document.getElementById('conn')?.dataset.state === s,
    state,
    { timeout: WAIT },
  );
}

export function message(page, text) {
  return page.locator('#messages > li', { hasText: text });
}

export async function send(page, text) {
  const input = page.locator('#input');
  await input.fill(text);
  await input.press('Enter');
}

/** On a phone the conversation list is a drawer behind the menu button. */
export async function openNav(page) {
  if (await page.locator('#menu').isVisible()) {
    await page.locator('#menu').click();
    await page.waitForFunction(() => document.body.classList.contains('nav-open'));
  }
}

export async function openConversation(page, list, name) {
  await openNav(page);
  await page.locator(`#${list} button.conv`, { hasText: name }).click();
  await page.waitForFunction(() => !document.body.classList.contains('nav-open'));
}

export async function register(page, base, name) {
  await page.goto(base);
  await waitFor(page.locator('#login-form'));
  await shot(page, `login-${name}.png`);
  await accessible(page, 'sign-in');
  await page.locator('#login-username').fill(name);
  await page.locator('#login-password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await connState(page, 'connected');
  assert.equal(await page.locator('#me-name').textContent(), name);
}

/** Signs in an account that already exists. */
export async function signIn(page, base, name) {
  await page.goto(base);
  await waitFor(page.locator('#login-form'));
  await page.locator('#login-username').fill(name);
  await page.locator('#login-password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await connState(page, 'connected');
}

/**
 * Runs axe on what the page shows now, in light and in dark mode, and fails
 * on any serious or critical violation, naming the rule and the elements.
 */
export async function accessible(page, screen) {
  const problems = [];
  for (const colorScheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme });
    // Colours change with a transition; axe must see the settled ones.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    await page.evaluate(() => Promise.all(document.getAnimations().map((a) => a.finished.catch(() => {}))));
    const { violations } = await new AxeBuilder({ page }).analyze();
    for (const v of violations) {
      if (v.impact !== 'serious' && v.impact !== 'critical') continue;
      const where = v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary.replace(/\s+/g, ' ')}`);
      problems.push(`${screen} (${colorScheme}): ${v.id} [${v.impact}] ${v.help}\n    ${where.join('\n    ')}`);
    }
  }
  await page.emulateMedia({ colorScheme: 'light' });
  assert.deepEqual(problems, [], problems.join('\n'));
}


/** `accessible` at the page's own size, then at a phone's. */
export async function accessibleEverywhere(page, screen) {
  await accessible(page, screen);
  const size = page.viewportSize();
  await page.setViewportSize({ width: 390, height: 780 });
  try {
    await accessible(page, `${screen}, phone size`);
  } finally {
    await page.setViewportSize(size);
  }
}
