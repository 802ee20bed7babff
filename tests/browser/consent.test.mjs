// A real browser through the flows an administrator and a user go through: Debian's
// chromium, driven by playwright-core, against the consent-callback handler served by
// its `local_server` example (moto + microsoft-sim in HTML mode, all on 127.0.0.1).
// Screenshots land in target/browser/ for people to look at.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { shots, start, stop } from './site.mjs';

let running;
let site;
let browser;

before(async () => {
  running = await start();
  ({ site, browser } = running);
});

after(async () => {
  await stop(running);
});

test('an administrator grants consent for all features from the consent page', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${site.url}/consent`);
  assert.equal(await page.locator('h1').first().innerText(), 'Connect Microsoft 365');
  await page.screenshot({ path: path.join(shots, '01-consent-page.png'), fullPage: true });

  await page.getByRole('link', { name: 'Grant consent: All features (recommended)' }).click();
  await page.waitForURL((url) => url.href.startsWith(site.sim));
  await page.locator('input[name="login"]').first().fill(site.admin);
  await page.screenshot({ path: path.join(shots, '02-microsoft-sign-in.png') });
  await page.getByRole('button', { name: 'Next' }).click();

  await page.getByRole('button', { name: 'Accept' }).waitFor();
  assert.match(await page.content(), /Accept for your organization/);
  await page.screenshot({ path: path.join(shots, '03-microsoft-consent.png'), fullPage: true });
  await page.getByRole('button', { name: 'Accept' }).click();

  // Microsoft's redirect continues into the administrator's own sign-in, which proves their
  // tenant and directory role; nothing is recorded before it. Microsoft may sign them in
  // silently or ask them to pick their account: the sim asks.
  await page.waitForURL((url) => url.href.startsWith(`${site.url}/auth/callback`)
    || url.pathname.endsWith('/oauth2/v2.0/authorize'));
  if (!page.url().startsWith(`${site.url}/auth/callback`)) {
    const account = page.getByRole('button', { name: site.admin });
    await account.waitFor();
    await page.screenshot({ path: path.join(shots, '04-verify-administrator.png'), fullPage: true });
    await account.click();
    await page.waitForURL((url) => url.href.startsWith(`${site.url}/auth/callback`));
  }
  await page.screenshot({ path: path.join(shots, '05-consent-granted.png'), fullPage: true });
  assert.equal(await page.locator('h1').first().innerText(), 'Consent granted',
    `our success page, got: ${await page.locator('main').innerText()}`);
  assert.match(await page.locator('main').innerText(), new RegExp(site.tenant));
  await context.close();
});

test('a user signs in with Microsoft and lands in the app', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${site.url}/auth/login?login_hint=${encodeURIComponent(site.user)}`);
  await page.waitForURL((url) => url.href.startsWith(site.sim));
  assert.equal(await page.locator('input[name="login"]').first().inputValue(), site.user);
  await page.screenshot({ path: path.join(shots, '06-user-sign-in.png') });
  await page.getByRole('button', { name: 'Next' }).click();

  // Pre-authorized by the administrator: no consent screen, straight to the app.
  await page.waitForURL((url) => url.href.startsWith(site.app), { timeout: 30_000 });
  await page.screenshot({ path: path.join(shots, '07-app.png') });
  assert.match(await page.locator('h1').innerText(), /Signed in/);
  await context.close();
});
