// What the viewer's browser scripts share: their input, headless Chromium (playwright-core, the
// system's Chromium), a watch on what the page requests, and the viewer's sign-in form.

import { chromium } from 'playwright-core';

// generous: on a loaded 2-core CI machine a first deep-zoom draw can take tens of seconds
export const WAIT = 90000;

// The script's input: one JSON object on stdin.
export async function readConfig() {
  return JSON.parse(await new Promise((resolve) => {
    let text = '';
    process.stdin.on('data', (chunk) => { text += chunk; });
    process.stdin.on('end', () => resolve(text));
  }));
}

// A fresh profile for each run (nothing cached from an earlier one), and its page.
export async function launch(config) {
  const context = await chromium.launchPersistentContext(config.profile, {
    executablePath: config.chromium,
    headless: true,
    // small enough that the whole-slide view of a 2048-pixel sample needs no full-resolution frame
    viewport: { width: 1100, height: 720 },
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  const page = context.pages()[0] || await context.newPage();
  return { context, page };
}

// Records on `seen`: every URL the page requests (`urls`), the requests to the DICOMweb root with
// the Authorization header they carried and their answer's status (`api`), and the answers of
// 400 and more, page errors and console errors (`errors`). Returns a function that waits for
// what is still being recorded.
export function watch(page, seen, base) {
  Object.assign(seen, { errors: [], urls: [], api: [] });
  const pending = [];
  page.on('request', (request) => seen.urls.push(request.url()));
  page.on('response', (response) => {
    const request = response.request();
    if (response.status() >= 400) seen.errors.push(`${response.status()} ${response.url()}`);
    if (!response.url().startsWith(`${base}/dicomweb/`)) return;
    pending.push(request.allHeaders().then((headers) => seen.api.push({
      url: response.url(),
      method: request.method(),
      authorization: headers.authorization || null,
      status: response.status(),
    })));
  });
  page.on('pageerror', (error) => seen.errors.push(`page error: ${error.message}`));
  page.on('console', (entry) => {
    if (entry.type() === 'error') seen.errors.push(`console: ${entry.text()}`);
  });
  return () => Promise.all(pending);
}

// Fills the sign-in form and sends it; the text of its status line once the answer came.
export async function signIn(page, person, password) {
  await page.waitForSelector('form#signin', { timeout: WAIT });
  await page.fill('#signin-person', person);
  await page.fill('#signin-password', password);
  const answered = page.waitForResponse((response) => response.url().endsWith('/auth/token'), { timeout: WAIT });
  await page.click('form#signin button[type="submit"]');
  const response = await answered;
  await page.waitForFunction(
    () => !document.querySelector('form#signin') || !document.querySelector('form#signin button').disabled,
    null,
    { timeout: WAIT },
  );
  return {
    status: response.status(),
    retry_after: response.headers()['retry-after'] || null,
    message: await page.evaluate(() => document.querySelector('form#signin .signin-status')?.textContent ?? null),
  };
}

// What the page keeps: sessionStorage and localStorage (as objects) and its cookies.
export async function storage(page) {
  return page.evaluate(() => ({
    session: { ...sessionStorage },
    local: { ...localStorage },
    cookie: document.cookie,
  }));
}
