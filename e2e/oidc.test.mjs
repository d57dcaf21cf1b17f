// OpenID Connect sign-in in a real browser against a real, certified
// OpenID Provider (oidc-provider, e2e/oidc-provider.mjs): the web client's
// provider button, the provider's own login and consent pages, and back
// in confab signed in. A callback whose state was tampered with signs no
// one in.
//
//   cargo build && (cd e2e && npm ci && node --test oidc.test.mjs)

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { ARTIFACTS, BIN, CHROMIUM, SERVER_ENV, WAIT, ctx } from './harness.mjs';
import { startProvider } from './oidc-provider.mjs';

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

function startConfab(configPath, bind) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['--config', configPath, 'serve', '--bind', bind, '--data-dir', ctx.dataDir], {
      env: { ...SERVER_ENV, CONFAB_OUTBOUND_ALLOW: '127.0.0.1', CONFAB_OUTBOUND_ALLOW_HTTP: 'true' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`confab did not start: ${err}`)); }, WAIT);
    child.stdout.on('data', (b) => {
      out += b;
      const m = out.match(/confab listening on (http:\/\/[^\s]+)/);
      if (m) { clearTimeout(timer); resolve({ child, url: m[1] }); }
    });
    child.stderr.on('data', (b) => { err = (err + b).slice(-4000); });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`confab exited (${code}): ${err}`)); });
  });
}

describe('OpenID Connect sign-in', { timeout: 120_000 }, () => {
  let provider;
  let confab;
  let browser;

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    ctx.dataDir = await mkdtemp(path.join(os.tmpdir(), 'confab-e2e-oidc-'));
    const [opPort, confabPort] = [await freePort(), await freePort()];
    const base = `http://127.0.0.1:${confabPort}`;
    provider = await startProvider({ port: opPort, redirectUri: `${base}/api/auth/oidc/acme/callback` });
    const config = path.join(ctx.dataDir, 'config.toml');
    await writeFile(config, [
      '[[auth.oidc]]',
      'name = "acme"',
      'label = "Acme ID"',
      `issuer = "${provider.issuer}"`,
      `client_id = "${provider.clientId}"`,
      `client_secret = "${provider.clientSecret}"`,
      'scopes = ["openid", "profile"]',
      '',
    ].join('\n'));
    confab = await startConfab(config, `127.0.0.1:${confabPort}`);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
  });

  after(async () => {
    await browser?.close();
    confab?.child.kill('SIGTERM');
    await provider?.close();
  });

  it('signs in through the provider\'s own pages', async () => {
    const page = await (await browser.newContext()).newPage();
    await page.goto(confab.url);
    const button = page.getByRole('link', { name: 'Sign in with Acme ID' });
    await button.waitFor({ timeout: WAIT });
    await button.click();
    // The provider's login page (oidc-provider's own interaction).
    await page.locator('input[name="login"]').waitFor({ timeout: WAIT });
    assert.ok(page.url().startsWith(provider.issuer), page.url());
    await page.locator('input[name="login"]').fill('dana');
    await page.locator('input[name="password"]').fill('anything');
    await page.locator('button[type="submit"]').click();
    // Its consent page, then back to confab.
    const consent = page.getByRole('button', { name: 'Continue' });
    await consent.waitFor({ timeout: WAIT });
    await consent.click();
    await page.waitForURL((u) => u.toString().startsWith(confab.url), { timeout: WAIT });
    await page.locator('#me-name').waitFor({ state: 'visible', timeout: WAIT });
    assert.equal(await page.locator('#me-name').textContent(), 'dana');
    // The token left the address bar.
    assert.ok(!page.url().includes('oidc_token'), page.url());
    await page.screenshot({ path: path.join(ARTIFACTS, 'oidc-signed-in.png') });
  });

  it('refuses a callback whose state was tampered with', async () => {
    const page = await (await browser.newContext()).newPage();
    await page.goto(confab.url);
    const button = page.getByRole('link', { name: 'Sign in with Acme ID' });
    await button.waitFor({ timeout: WAIT });
    // A sign-in started (the state cookie set, the provider's login page
    // open), then a callback that carries another state than the one
    // sent to the provider: refused before any code is exchanged.
    await button.click();
    await page.locator('input[name="login"]').waitFor({ timeout: WAIT });
    const sent = new URL(page.url());
    assert.ok(sent.toString().startsWith(provider.issuer), sent.toString());
    await page.goto(`${confab.url}/api/auth/oidc/acme/callback?code=stolen-code&state=forged-state`);
    await page.locator('#login-error').filter({ hasText: 'state does not match' }).waitFor({ timeout: WAIT });
    assert.ok(!page.url().includes('oidc_'), page.url());
    assert.equal(await page.locator('#chat').isHidden(), true);
    const stored = await page.evaluate(() => localStorage.getItem('confab.token'));
    assert.equal(stored, null);
  });
});
