// A real browser through the administrator's sync view (/admin) and the user's settings
// (/me): Debian's chromium, driven by playwright-core, against the consent-callback handler
// served by its `local_server` example (moto + microsoft-sim in HTML mode, all on
// 127.0.0.1; its own world, separate from consent.test.mjs's). Screenshots in target/browser/.

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


// Microsoft's pages: the account form (or the account picker when already signed in), then
// a consent screen if one is asked; returns once the browser is back on one of our pages.
async function throughMicrosoft(page, upn) {
  await page.waitForURL((url) => url.href.startsWith(site.sim));
  const form = page.locator('input[name="login"]').first();
  const account = page.getByRole('button', { name: upn });
  await form.or(account).first().waitFor();
  if (await form.isVisible()) {
    await form.fill(upn);
    await page.getByRole('button', { name: 'Next' }).click();
  } else {
    await account.click();
  }
  await page.waitForURL((url) => !url.href.startsWith(site.sim)
    || /Accept/.test(url.href), { timeout: 30_000 }).catch(() => {});
  if (page.url().startsWith(site.sim)) {
    const accept = page.getByRole('button', { name: 'Accept' });
    await accept.waitFor();
    await accept.click();
  }
  await page.waitForURL((url) => !url.href.startsWith(site.sim), { timeout: 30_000 });
}

// Waits for one of our pages; a timeout says where the browser was instead.
async function arrive(page, pathname) {
  try {
    await page.waitForURL(`${site.url}${pathname}`, { timeout: 15_000 });
  } catch (error) {
    const text = await page.locator('body').innerText().catch(() => '');
    throw new Error(`expected ${pathname}, at ${page.url()}: ${text.slice(0, 400)}`);
  }
}

test('the user connects, the administrator sees them and turns email sync off', async () => {
  // The demo world's user connects first (Sign in with Microsoft).
  const userContext = await browser.newContext();
  const user = await userContext.newPage();
  await user.goto(`${site.url}/auth/login?login_hint=${encodeURIComponent(site.user)}`);
  await throughMicrosoft(user, site.user);
  await user.waitForURL((url) => url.href.startsWith(site.app), { timeout: 30_000 });
  await userContext.close();

  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${site.url}/admin`);
  // No session: to the sign-in, which asks Microsoft for openid profile only.
  await page.waitForURL((url) => url.href.startsWith(site.sim));
  assert.equal(new URL(page.url()).searchParams.get('scope'), 'openid profile');
  await throughMicrosoft(page, site.admin);
  await arrive(page, '/admin');
  const main = page.locator('main');
  assert.match(await page.locator('h1').first().innerText(), /administrator's view/);
  const table = await page.locator('#users').innerText();
  assert.match(table, new RegExp(site.user.replace('.', '\\.')));
  assert.match(table, /active/);
  assert.match(await main.innerText(), new RegExp(site.tenant));
  await page.screenshot({ path: path.join(shots, '10-admin-view.png'), fullPage: true });

  const email = page.getByRole('checkbox', { name: 'Email sync' });
  assert.equal(await email.isChecked(), true);
  await email.uncheck();
  await page.getByRole('button', { name: 'Save switches' }).click();
  await arrive(page, '/admin');
  assert.equal(await page.getByRole('checkbox', { name: 'Email sync' }).isChecked(), false);
  assert.equal(await page.getByRole('checkbox', { name: 'Calendar sync' }).isChecked(), true);
  await page.screenshot({ path: path.join(shots, '11-admin-email-sync-off.png'), fullPage: true });

  // The session cookie is HttpOnly and SameSite=Strict.
  const cookie = (await context.cookies()).find((c) => c.name.endsWith('o365s'));
  assert.ok(cookie, 'session cookie');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  await context.close();
});

test('the user turns calendar sync off, then disconnects and their data is gone', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${site.url}/me`);
  await throughMicrosoft(page, site.user);
  await arrive(page, '/me');
  assert.match(await page.locator('main').innerText(), new RegExp(site.user.replace('.', '\\.')));
  // The administrator turned email sync off in the test before: shown, not changeable.
  assert.equal(await page.getByRole('checkbox', { name: 'Email sync' }).isDisabled(), true);
  await page.screenshot({ path: path.join(shots, '12-user-settings.png'), fullPage: true });

  const calendar = page.getByRole('checkbox', { name: 'Calendar sync' });
  assert.equal(await calendar.isChecked(), true);
  await calendar.uncheck();
  await page.getByRole('button', { name: 'Save' }).first().click();
  await arrive(page, '/me');
  assert.equal(await page.getByRole('checkbox', { name: 'Calendar sync' }).isChecked(), false);
  await page.screenshot({ path: path.join(shots, '13-user-calendar-off.png'), fullPage: true });

  await page.getByRole('checkbox', { name: 'I understand; delete my data' }).check();
  await page.getByRole('button', { name: 'Disconnect' }).click();
  await page.locator('#deleted').waitFor();
  assert.equal(await page.locator('h1').first().innerText(), 'Disconnected');
  assert.match(await page.locator('#deleted').innerText(), /sign-in token/);
  await page.screenshot({ path: path.join(shots, '14-user-disconnected.png'), fullPage: true });

  // Gone: the settings page has no connection any more.
  await page.getByRole('link', { name: 'Back to your settings' }).click();
  await arrive(page, '/me');
  assert.match(await page.locator('main').innerText(), /not connected/);
  await page.screenshot({ path: path.join(shots, '15-user-not-connected.png'), fullPage: true });
  await context.close();
});
