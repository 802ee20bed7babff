// A real browser through Explicit Consent Mode's recording-consent page (/m/{token}):
// Debian's chromium, driven by playwright-core, against the consent-callback handler served
// by its `local_server` example (moto + microsoft-sim, all on 127.0.0.1; its own world).
// local_server leaves one meeting of its user as calendar-sync leaves it: active, one
// guest, its Teams meeting made in the sim (whose join page is the sim's). Screenshots in
// target/browser/.

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

test('a guest opens the consent page, declines, lands on the Teams meeting, and the answer is kept', async () => {
  const { meeting } = site;
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(meeting.guestLink);
  assert.equal(await page.locator('h1').first().innerText(), 'May we record this meeting?');
  const main = await page.locator('main').innerText();
  // The host's organization and the start; never an attendee or the join URL.
  assert.match(main, /Contoso Ltd invites you to a meeting on/);
  assert.match(main, /UTC/);
  assert.doesNotMatch(main, /ann@|fabrikam|Pricing review/);
  assert.equal(await page.locator(`a[href="${meeting.joinUrl}"]`).count(), 0);
  await page.screenshot({ path: path.join(shots, '20-meeting-consent.png'), fullPage: true });

  // The CSRF cookie: HttpOnly, SameSite=Strict.
  const cookie = (await context.cookies()).find((c) => c.name.endsWith('o365m'));
  assert.ok(cookie, 'the CSRF cookie');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');

  await page.getByRole('button', { name: 'No, do not record me' }).click();
  await page.waitForURL((url) => url.href === meeting.joinUrl, { timeout: 15_000 });
  assert.equal(page.url(), meeting.joinUrl);
  assert.match(await page.title(), /Microsoft Teams meeting/);
  await page.locator('#sim-teams-join').waitFor();
  await page.screenshot({ path: path.join(shots, '21-meeting-joined.png'), fullPage: true });

  // The answer is stored: the guest's own link shows it when opened again.
  await page.goto(meeting.guestLink);
  assert.match(await page.locator('main').innerText(), /You asked not to be recorded/);
  await page.screenshot({ path: path.join(shots, '22-meeting-answer-kept.png'), fullPage: true });
  await context.close();
});

test('a link that opens nothing says so and shows nothing of any meeting', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const response = await page.goto(`${site.url}/m/${'A'.repeat(43)}`);
  assert.equal(response.status(), 404);
  assert.equal(await page.locator('h1').first().innerText(), 'This link is not valid');
  assert.doesNotMatch(await page.locator('main').innerText(), /Contoso|UTC/);
  await context.close();
});
