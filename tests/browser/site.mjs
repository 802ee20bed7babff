// What the browser tests share: the consent-callback handler served by its `local_server`
// example (moto + microsoft-sim in HTML mode, all on 127.0.0.1; one per test file), and
// Debian's chromium driven headless by playwright-core. Screenshots go to target/browser/.

import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const shots = path.join(root, 'target/browser');
const server = path.join(root, 'target/debug/examples/local_server');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

// Starts local_server and chromium: { child, site (the server's first stdout line), browser }.
export async function start() {
  mkdirSync(shots, { recursive: true });
  const child = spawn(server, [], { cwd: root, stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    const site = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('local_server did not start in 120 s')), 120_000);
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`local_server exited early (${code})`)));
      createInterface({ input: child.stdout }).once('line', (line) => {
        clearTimeout(timer);
        resolve(JSON.parse(line));
      });
    });
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
    return { child, site, browser };
  } catch (error) {
    // Nothing of a failed start is left running.
    child.kill('SIGTERM');
    throw error;
  }
}

// Closes the browser, then ends local_server (stdin closed; SIGTERM after 10 s).
export async function stop({ child, browser } = {}) {
  await browser?.close();
  if (child && child.exitCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.stdin.end();
    const timer = setTimeout(() => child.kill('SIGTERM'), 10_000);
    await exited;
    clearTimeout(timer);
  }
}
